//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/flannelu/flannelu/internal/rules/iptables"
	"github.com/flannelu/flannelu/testbed"
)

// The -manual paths are the kernel paths flannelu's vxlan and host-gw
// backends program, set up by the harness itself with ip and bridge — no
// etcd, no flannelu — in flannel's exact layout, so that the report shows
// whether flannelu's programming costs anything against the bare kernel.
const manualSuffix = "-manual"

// manualBase says which backend a -manual path copies ("vxlan" for
// "vxlan-manual").
func manualBase(path string) (string, bool) {
	base, ok := strings.CutSuffix(path, manualSuffix)
	return base, ok && (base == "vxlan" || base == "host-gw")
}

// needsFlannelu says whether a path runs flannelu and etcd: every path but
// the hand-made ones (-manual and the floors) and flanneld's.
func needsFlannelu(path string) bool {
	_, manual := manualBase(path)
	return !manual && !isFloor(path) && path != flanneldPath && path != wireguardGoPath
}

// manualSubnet is host i's lease on the hand-made paths: 198.18.<i>.0/24,
// the podCIDR udp-kube's Node of host i gets.
func manualSubnet(i int) netip.Prefix {
	return testbed.PodCIDR(i)
}

// manualMTU is the overlay MTU flannel gives the backend on a 1500 link.
func manualMTU(base string) int {
	if base == "vxlan" {
		return 1500 - 50
	}
	return 1500
}

// vxlanDevice is what flannel's vxlan backend creates on a host: flannel.1
// on eth0 with the host's underlay address, port 8472, learning off, the
// overlay MTU, and the lease's network address as /32.
func vxlanDevice(self netip.Addr, lease netip.Prefix) [][]string {
	return [][]string{
		{"ip", "link", "add", "flannel.1", "type", "vxlan", "id", "1", "local", self.String(),
			"dev", "eth0", "dstport", "8472", "nolearning"},
		{"ip", "link", "set", "flannel.1", "mtu", strconv.Itoa(manualMTU("vxlan")), "up"},
		{"ip", "addr", "add", netip.PrefixFrom(lease.Addr(), 32).String(), "dev", "flannel.1"},
	}
}

// peerCommands is what the backend programs on a host for one remote
// lease; mac is the peer's flannel.1 address (vxlan only).
func peerCommands(base string, peer netip.Addr, lease netip.Prefix, mac string) [][]string {
	if base == "host-gw" {
		return [][]string{{"ip", "route", "add", lease.String(), "via", peer.String(), "dev", "eth0"}}
	}
	vtep := lease.Addr().String()
	return [][]string{
		{"ip", "neigh", "add", vtep, "lladdr", mac, "dev", "flannel.1", "nud", "permanent"},
		{"bridge", "fdb", "append", mac, "dev", "flannel.1", "dst", peer.String(), "self", "permanent"},
		{"ip", "route", "add", lease.String(), "via", vtep, "dev", "flannel.1", "onlink"},
	}
}

// forwardRules are the FORWARD accept rules flanneld installs by default
// (--iptables-forward-rules), which flannelu does too: the hand-made paths
// carry them as well, so every path pays the same netfilter hook and the
// "X / X-manual" ratios compare like with like.
func forwardRules() [][]string {
	set := iptables.Forward(netip.MustParsePrefix(overlayNetwork))
	cmds := [][]string{{"iptables", "-t", set.Table, "-N", set.Chain}}
	for _, r := range set.Rules {
		cmds = append(cmds, append([]string{"iptables", "-t", set.Table}, r.Args()...))
	}
	return cmds
}

// linkMAC reads the Ethernet address from `ip -j link show` output.
func linkMAC(out string) (string, error) {
	var links []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		return "", fmt.Errorf("ip -j link: %w", err)
	}
	if len(links) != 1 {
		return "", fmt.Errorf("ip -j link: %d links", len(links))
	}
	if _, err := net.ParseMAC(links[0].Address); err != nil || len(links[0].Address) != 17 {
		return "", fmt.Errorf("ip -j link: no Ethernet address in %q", out)
	}
	return links[0].Address, nil
}

// newHandMadeBed builds the Direct two-host testbed without etcd or
// flannelu that the -manual and udp-floor paths program themselves, and
// registers it for teardown (also on a signal).
func newHandMadeBed(cfg *config, s *setup, name, dir string) (*testbed.Bed, error) {
	b, err := testbed.New(testbed.Options{Name: name, Direct: true, Hosts: 2, Dir: dir, PinHosts: cfg.pin})
	if err != nil {
		return nil, err
	}
	s.bed, s.tb = b, b
	return b, hold(b)
}

// setupManual builds the same Direct two-host testbed as the flannelu
// paths, one pod per host behind cni0, and programs base's kernel layout
// by hand.
func setupManual(cfg *config, s *setup, base, name, dir string) error {
	b, err := newHandMadeBed(cfg, s, name, dir)
	if err != nil {
		return err
	}
	macs := map[int]string{}
	for _, h := range b.Hosts {
		lease := manualSubnet(h.Index)
		if err := h.AddPods(1, netip.PrefixFrom(lease.Addr().Next(), lease.Bits()), manualMTU(base)); err != nil {
			return err
		}
		if err := runAll(h, forwardRules()); err != nil {
			return err
		}
		if base != "vxlan" {
			continue
		}
		if err := runAll(h, vxlanDevice(h.Addr, lease)); err != nil {
			return err
		}
		out, err := h.Run("ip", "-j", "link", "show", "dev", "flannel.1")
		if err != nil {
			return err
		}
		if macs[h.Index], err = linkMAC(out); err != nil {
			return err
		}
	}
	for _, h := range b.Hosts {
		for _, peer := range b.Hosts {
			if peer != h {
				if err := runAll(h, peerCommands(base, peer.Addr, manualSubnet(peer.Index), macs[peer.Index])); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func runAll(h *testbed.Host, cmds [][]string) error {
	for _, args := range cmds {
		if _, err := h.Run(args...); err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
	}
	return nil
}
