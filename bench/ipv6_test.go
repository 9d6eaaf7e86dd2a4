//go:build linux

package main

import (
	"encoding/binary"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/testbed"
)

func TestIPv6RowsRatios(t *testing.T) {
	rep := &report{Settings: settings{Rates: []int{100000}}, Paths: []pathResult{
		{Path: "udp", TCP1: &iperfResult{Gbps: 2}, IPv6: &ipv6Result{TCP1: &iperfResult{Gbps: 1.5}, Latency: &latResult{P50: 60}}},
		{Path: "vxlan", TCP1: &iperfResult{Gbps: 8}, IPv6: &ipv6Result{TCP1: &iperfResult{Gbps: 6}, Latency: &latResult{P50: 30}}},
		{Path: "host-gw", TCP1: &iperfResult{Gbps: 9}},
	}}
	tab := table(rep, append(metricRows(rep.Settings.Rates), ipv6Rows()...), true)
	for _, want := range []string{
		"| IPv6: TCP, 1 stream (Gbit/s) | 1.50 | 6.00 | — | 0.25× |  |",
		"| IPv6: UDP round trip p50 (µs) | 60 | 30 | — | 2.00× |  |",
	} {
		if !strings.Contains(tab, want) {
			t.Errorf("table lacks %q:\n%s", want, tab)
		}
	}
}

// The ping-pong helpers' sockets take IPv6 addresses: one round trip over
// ::1 in a namespace with IPv6 on.
func TestUDPSocketIPv6RoundTrip(t *testing.T) {
	ns := testbed.Namespace(t, "bench6")
	ns.Exec(t, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.conf.lo.disable_ipv6=0")
	ns.In(t, func() {
		srv, err := udpSocket("[::1]:9001", true)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(srv)
		cli, err := udpSocket("[::1]:9001", false)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(cli)
		tv := unix.NsecToTimeval(2e9) // a lost echo ends the read, not the test
		if err := unix.SetsockoptTimeval(cli, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			t.Fatal(err)
		}
		go func() { // one echo, as echoServe does
			buf := make([]byte, 2048)
			if n, from, err := unix.Recvfrom(srv, buf, 0); err == nil {
				unix.Sendto(srv, buf[:n], 0, from) //nolint:errcheck // the round trip reports a loss
			}
		}()
		out, in := make([]byte, payloadLen), make([]byte, 2048)
		binary.BigEndian.PutUint64(out, 7)
		if rtt, ok := roundTrip(cli, out, in, 7); !ok || rtt <= 0 {
			t.Fatalf("round trip over [::1]: ok=%v rtt=%v", ok, rtt)
		}
	})
}
