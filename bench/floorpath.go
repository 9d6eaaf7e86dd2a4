//go:build linux

package main

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/flannelu/flannelu/testbed"
)

// floorPath is the udp-floor path: flannel's udp backend layout — flannel0
// on each host, flannel's wire format on port 8285 — with the harness's
// forward helper (floor.go) as the data plane instead of flannelu, and
// no etcd: the leases are the -manual paths' 198.18.<i>.0/24. It measures
// the floor under any userspace forwarder driven by thread wake-ups here.
const floorPath = "udp-floor"

// floorPollPath is the same floor with the forwarder in flanneld's form:
// one thread in poll(2) on both descriptors (floor.go, -poll).
const floorPollPath = "udp-floor-poll"

// floorRawPath is the poll form whose thread makes its system calls
// without telling the Go scheduler (floor.go, -poll -raw): it keeps its P
// while it sleeps, like flanneld's C loop.
const floorRawPath = "udp-floor-rawpoll"

// floorForms are the forward helper's flags for each floor path.
var floorForms = map[string][]string{floorPath: nil, floorPollPath: {"-poll"}, floorRawPath: {"-poll", "-raw"}}

// isFloor says whether a path runs the harness's forwarder.
func isFloor(path string) bool {
	_, ok := floorForms[path]
	return ok
}

const (
	// floorMTU is the overlay MTU flannel's udp backend gives pods and
	// flannel0 on a 1500 link: less the outer IPv4 and UDP headers.
	floorMTU = 1500 - 20 - 8
	// overlayNetwork is the flannel network every path uses.
	overlayNetwork = "198.18.0.0/16"
	// flannel0Wait bounds how long the forwarder has to create flannel0.
	flannel0Wait = 10 * time.Second
)

// hostProc is a harness helper running in a host namespace.
type hostProc struct {
	host string
	proc *testbed.Proc
}

// floorArgs are the forward helper's flags on host h for a floor path:
// its underlay address, its form, and every other host's lease.
func floorArgs(path string, h *testbed.Host, hosts []*testbed.Host) []string {
	args := append([]string{"-local", h.Addr.String()}, floorForms[path]...)
	for _, peer := range hosts {
		if peer != h {
			args = append(args, "-peer", manualSubnet(peer.Index).String()+"="+peer.Addr.String())
		}
	}
	return args
}

// floorDevice is what flannelu's udp backend does to its TUN
// (backend/udp/device_linux.go): the lease's network address as /32, the
// overlay MTU, no IPv6 (sysctl -e: a kernel without IPv6 has nothing to
// turn off), up, and one scope-link route for the whole network.
func floorDevice(lease netip.Prefix) [][]string {
	return [][]string{
		{"ip", "link", "set", floorTUN, "mtu", strconv.Itoa(floorMTU)},
		{"ip", "addr", "add", netip.PrefixFrom(lease.Addr(), 32).String(), "dev", floorTUN},
		{"sysctl", "-qew", "net.ipv6.conf." + floorTUN + ".disable_ipv6=1"},
		{"ip", "link", "set", floorTUN, "up"},
		{"ip", "route", "add", overlayNetwork, "dev", floorTUN, "scope", "link"},
	}
}

// setupFloor builds the Direct two-host testbed with one pod per host
// behind cni0, starts a forwarder on each host and configures its
// flannel0. The forwarders are the bed's processes: tearing the bed down
// (s.tb, also on any failure here and on a signal) stops them.
func setupFloor(cfg *config, s *setup, path, name, dir string) error {
	b, err := newHandMadeBed(cfg, s, name, dir)
	if err != nil {
		return err
	}
	for _, h := range b.Hosts {
		lease := manualSubnet(h.Index)
		if err := h.AddPods(1, netip.PrefixFrom(lease.Addr().Next(), lease.Bits()), floorMTU); err != nil {
			return err
		}
		args := append([]string{"env", helperEnv + "=forward", cfg.self}, floorArgs(path, h, b.Hosts)...)
		p, err := b.Start(h.NS, "forward-h"+strconv.Itoa(h.Index), args...)
		if err != nil {
			return fmt.Errorf("%s: start forwarder: %w", h.Name, err)
		}
		s.helpers = append(s.helpers, hostProc{h.Name, p})
		if err := waitTUN(h, p, flannel0Wait); err != nil {
			return err
		}
		if err := runAll(h, append(floorDevice(lease), forwardRules()...)); err != nil {
			return err
		}
	}
	return nil
}

// waitTUN polls until the forwarder has created flannel0 (which it does
// once its socket is bound), failing early if the forwarder died.
func waitTUN(h *testbed.Host, p *testbed.Proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if p.Exited() {
			return fmt.Errorf("%s: forwarder exited before creating %s:%s", h.Name, floorTUN, testbed.Tail(p.Log, 5))
		}
		_, err := h.Run("ip", "link", "show", floorTUN)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: no %s after %v: %w", h.Name, floorTUN, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
