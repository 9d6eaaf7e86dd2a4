// Package kernel holds the netlink helpers that the kernel-programming
// backends (vxlan, host-gw) share: dumps retried when the kernel reports
// them interrupted, idempotent deletes, address conversions (also for the
// udp backend's TUN setup), and the periodic reconcile loop.
package kernel

import (
	"net"
	"net/netip"
)

// IPNet converts a prefix to the *net.IPNet netlink wants. The result is a
// fresh value the caller owns.
func IPNet(p netip.Prefix) *net.IPNet {
	p = p.Masked()
	return &net.IPNet{
		IP:   net.IP(p.Addr().AsSlice()),
		Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
	}
}

// Prefix converts a netlink destination back; ok is false for nil or a
// malformed mask. IPv4-mapped addresses are unmapped so that 4-in-6 forms
// compare equal to plain IPv4 prefixes.
func Prefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := Addr(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	if bits == 0 || bits-ones > a.BitLen() {
		return netip.Prefix{}, false
	}
	if bits == 128 && a.Is4() {
		ones -= 96
	}
	return netip.PrefixFrom(a, ones).Masked(), true
}

// Addr converts a net.IP (4 or 16 bytes) to an unmapped netip.Addr.
func Addr(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// IP converts an address to the net.IP netlink wants (4 bytes for IPv4).
func IP(a netip.Addr) net.IP {
	return net.IP(a.AsSlice())
}
