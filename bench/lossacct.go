//go:build linux

package main

import (
	"bufio"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/flannelu/flannelu/testbed"
)

// The 64-byte UDP run's lost datagrams, by where the kernel counted them:
// a snapshot of each namespace's UDP statistics (/proc/net/snmp: receive
// buffer overflows, send buffer errors) and its devices' drop counters
// (/proc/net/dev) before and after the run, printed as differences. It
// names where the loss happens on every path; flannelu's /metrics shows
// its own share (flannelu_tun_tx_dropped_packets_total is flannel0's
// tx drop, flannelu_udp_socket_dropped_datagrams_total the hosts'
// RcvbufErrors on port 8285).

// lossPlace is one namespace whose counters are read.
type lossPlace struct {
	name string
	ns   testbed.NS
}

// lossPlaces are the sending pod, every host and the receiving pod.
func lossPlaces(c *testbed.Bed, src, dst *testbed.Pod) []lossPlace {
	places := []lossPlace{{"pod1", src.NS}}
	for _, h := range c.Hosts {
		places = append(places, lossPlace{fmt.Sprintf("host%d", h.Index), h.NS})
	}
	return append(places, lossPlace{"pod2", dst.NS})
}

// lossSnapshot reads every place's counters; a place that cannot be read
// is left out (the breakdown is information, not a measurement).
func lossSnapshot(places []lossPlace) map[string]int64 {
	out := map[string]int64{}
	for _, p := range places {
		text, err := p.ns.Run("cat", "/proc/net/snmp", "/proc/net/dev")
		if err != nil {
			continue
		}
		parseLossCounters(p.name, text, out)
	}
	return out
}

// parseLossCounters keeps Udp's InErrors, RcvbufErrors and SndbufErrors
// and each device's rx and tx drops.
func parseLossCounters(place, text string, out map[string]int64) {
	var udpNames []string
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) > 1 && f[0] == "Udp:" && udpNames == nil:
			udpNames = f[1:]
		case len(f) > 1 && f[0] == "Udp:":
			for i, v := range f[1:] {
				if i < len(udpNames) && strings.HasSuffix(udpNames[i], "Errors") {
					n, _ := strconv.ParseInt(v, 10, 64)
					out[place+" udp "+udpNames[i]] = n
				}
			}
		case len(f) == 17 && strings.HasSuffix(f[0], ":"):
			dev := strings.TrimSuffix(f[0], ":")
			rx, _ := strconv.ParseInt(f[4], 10, 64)
			tx, _ := strconv.ParseInt(f[12], 10, 64)
			out[place+" "+dev+" rx_drop"] = rx
			out[place+" "+dev+" tx_drop"] = tx
		}
	}
}

// lossDiff formats the counters that moved between two snapshots.
func lossDiff(before, after map[string]int64) string {
	var parts []string
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			parts = append(parts, fmt.Sprintf("%s +%d", k, d))
		}
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return "no kernel drop counter moved"
	}
	return strings.Join(parts, ", ")
}
