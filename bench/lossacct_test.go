//go:build linux

package main

import (
	"strings"
	"testing"
)

// lossSample is /proc/net/snmp's Udp lines and /proc/net/dev (abridged).
const lossSample = `Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 116989 0 1987 117000 1987 0 0 0 0
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
flannel0: 100 2 0 0 0 0 0 0 200 3 0 2829 0 0 0 0
`

func TestLossCounters(t *testing.T) {
	before := map[string]int64{}
	parseLossCounters("host2", strings.Replace(strings.Replace(lossSample, "1987", "0", 2), "2829", "0", 1), before)
	after := map[string]int64{}
	parseLossCounters("host2", lossSample, after)
	want := "host2 flannel0 tx_drop +2829, host2 udp InErrors +1987, host2 udp RcvbufErrors +1987"
	if got := lossDiff(before, after); got != want {
		t.Fatalf("lossDiff = %q, want %q", got, want)
	}
	if got := lossDiff(after, after); got != "no kernel drop counter moved" {
		t.Fatalf("lossDiff of equal snapshots = %q", got)
	}
}

// FuzzLossCounters: any text parses without a panic, into counters named
// after the place.
func FuzzLossCounters(f *testing.F) {
	f.Add(lossSample)
	f.Add("Udp: a\nUdp:\n")
	f.Fuzz(func(t *testing.T, text string) {
		out := map[string]int64{}
		parseLossCounters("p", text, out)
		for k := range out {
			if !strings.HasPrefix(k, "p ") {
				t.Fatalf("counter %q is not named after its place", k)
			}
		}
	})
}
