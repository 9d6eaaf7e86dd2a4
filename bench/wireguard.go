//go:build linux

package main

import (
	"fmt"
	"net/netip"
	"path/filepath"

	"github.com/flannelu/flannelu/testbed"
)

// The wireguard paths: flannelu's wireguard backend (path "wireguard",
// WireGuard in the flannelu process on this kernel, which has none) and
// its reference, standalone wireguard-go of the same version (path
// "wireguard-go", no flannelu, no etcd), each host's device configured by
// hand with wg and ip exactly as flanneld's wireguard backend configures
// the kernel's: the same key, port, MTU, address, route and peers.
const (
	wireguardPath   = "wireguard"
	wireguardGoPath = "wireguard-go"
	wireguardMTU    = 1500 - 80
	wireguardPort   = 51820
)

// privateDirs are the directories each host of a path needs of its own:
// a WireGuard device's UAPI socket lives in /run/wireguard.
func privateDirs(backend string) []string {
	if backend == wireguardPath || backend == wireguardGoPath {
		return []string{"/run/wireguard"}
	}
	return nil
}

// setupWireGuardGo builds the Direct two-host testbed, one pod per host
// behind cni0, and on each host standalone wireguard-go laid out as
// flanneld's flannel-wg, every host the other's peer.
func setupWireGuardGo(cfg *config, s *setup, name, dir string) error {
	b, err := testbed.New(testbed.Options{Name: name, Direct: true, Hosts: 2, Dir: dir, PinHosts: cfg.pin,
		PrivateDirs: privateDirs(wireguardGoPath)})
	if err != nil {
		return err
	}
	s.bed, s.tb = b, b
	if err := hold(b); err != nil {
		return err
	}
	devs := map[int]*testbed.WireGuardGo{}
	for _, h := range b.Hosts {
		lease := manualSubnet(h.Index)
		key := filepath.Join(dir, fmt.Sprintf("wgkey-h%d", h.Index))
		if err := testbed.GenWireGuardKey(key); err != nil {
			return err
		}
		w, err := b.StartWireGuardGo(h, testbed.WireGuardLayout{Dev: "flannel-wg", KeyFile: key, Port: wireguardPort,
			MTU: wireguardMTU, Addr: netip.PrefixFrom(lease.Addr(), 32), Network: netip.MustParsePrefix(overlayNetwork)})
		if err != nil {
			return err
		}
		devs[h.Index] = w
		s.helpers = append(s.helpers, hostProc{h.Name, w.Proc})
		if err := h.AddPods(1, netip.PrefixFrom(lease.Addr().Next(), lease.Bits()), wireguardMTU); err != nil {
			return err
		}
		if err := runAll(h, forwardRules()); err != nil {
			return err
		}
	}
	for _, h := range b.Hosts {
		for _, peer := range b.Hosts {
			if peer == h {
				continue
			}
			ep := netip.AddrPortFrom(peer.Addr, wireguardPort)
			if err := devs[h.Index].SetPeer(devs[peer.Index].PublicKey, ep, []netip.Prefix{manualSubnet(peer.Index)}, ""); err != nil {
				return err
			}
		}
	}
	return nil
}
