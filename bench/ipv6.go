//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/flannelu/flannelu/testbed"
)

// ipv6Paths are the paths that also get the IPv6 rows: flannelu's udp
// backend (IPv6 pods over the IPv6 underlay) beside the kernel's vxlan.
var ipv6Paths = map[string]bool{"udp": true, "vxlan": true}

// ipv6Result is a path's IPv6 measurement: one TCP stream and the UDP
// ping-pong between IPv6-only pods over an IPv6 underlay.
type ipv6Result struct {
	TCP1    *iperfResult `json:"tcp_1_stream"`
	Latency *latResult   `json:"latency"`
}

// ipv6Rows are the IPv6 rows of the table, with ratios like the others.
func ipv6Rows() []row {
	return []row{
		{label: "IPv6: TCP, 1 stream (Gbit/s)", format: "%.2f", ratio: true, value: func(p pathResult) (float64, bool) {
			if p.IPv6 == nil {
				return 0, false
			}
			return pick(p.IPv6.TCP1, func(r *iperfResult) float64 { return r.Gbps })
		}},
		{label: "IPv6: UDP round trip p50 (µs)", format: "%.0f", ratio: true, value: func(p pathResult) (float64, bool) {
			if p.IPv6 == nil {
				return 0, false
			}
			return pick(p.IPv6.Latency, func(l *latResult) float64 { return l.P50 })
		}},
	}
}

// measureIPv6 measures path over IPv6 on a testbed of its own, built
// after the IPv4 measurements: two hosts over one veth with IPv6 addresses
// (2001:db8:0:1::1 and ::2), an IPv6-only network 2001:db8:100::/48 with
// the path's backend, one IPv6-only pod per host. It leaves res alone for
// paths without IPv6 rows, and when -measure has neither tcp nor latency.
func measureIPv6(cfg *config, path, dir string, res *pathResult) error {
	if !ipv6Paths[path] || !cfg.measures("tcp") && !cfg.measures("latency") {
		return nil
	}
	fmt.Fprintf(os.Stderr, "bench: %s over IPv6 ...\n", path)
	conf := fmt.Sprintf(`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":%q,"IPv6SubnetLen":64,"Backend":{"Type":%q}}`,
		testbed.PodNetworkV6, path)
	dir = filepath.Join(dir, "ipv6")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	c, err := testbed.NewCluster(testbed.ClusterOptions{
		Bed: testbed.Options{Name: cfg.name + "-" + strings.ReplaceAll(path, "-", "") + "6", Direct: true, Hosts: 2,
			Dir: dir, PinHosts: cfg.pin, IPv6: true},
		Flannelu: cfg.flannelu, Config: conf,
	})
	if err != nil {
		return fmt.Errorf("IPv6: %w", err)
	}
	defer c.Close()
	if err := startNodes(c, func(int) ([]string, error) { return cfg.args, nil }); err != nil {
		return fmt.Errorf("IPv6: %w", err)
	}
	src, dst := c.Hosts[0].Pods[0], c.Hosts[1].Pods[0] // Addr is the IPv6 address of an IPv6-only pod
	if err := testbed.Eventually(20*time.Second, func() error { _, err := testbed.Ping(src.NS, dst.Addr.String(), 1); return err }); err != nil {
		return fmt.Errorf("IPv6: %s never reached %s: %w", src.Addr, dst.Addr, err)
	}
	r := &ipv6Result{}
	if cfg.measures("tcp") {
		if r.TCP1, err = iperfOnce(cfg, c.Bed, src, dst); err != nil {
			return fmt.Errorf("IPv6: %w", err)
		}
	}
	if cfg.measures("latency") {
		if r.Latency, _, err = measureLatency(cfg, c.Bed, src, dst, nil); err != nil {
			return fmt.Errorf("IPv6: %w", err)
		}
	}
	res.IPv6 = r
	return nil
}

// iperfOnce runs one single-stream iperf3 from src to dst.
func iperfOnce(cfg *config, c *testbed.Bed, src, dst *testbed.Pod) (*iperfResult, error) {
	srv, err := iperfServer(c, dst)
	if err != nil {
		return nil, err
	}
	defer srv.Stop()
	return iperf(cfg, src, dst, 1)
}
