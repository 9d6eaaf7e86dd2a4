package routetable

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
)

// Peer is one remote host: the overlay subnets it leases and the underlay
// addresses its forwarder listens on. A dual-stack peer has both subnets,
// an IPv6-only one only Subnet6; it has at least one public address.
type Peer struct {
	Subnet     netip.Prefix // IPv4 lease subnet, e.g. 198.18.40.0/24; stored masked; zero if none
	Subnet6    netip.Prefix // IPv6 lease subnet, e.g. 2001:db8:100:1::/64; stored masked; zero if none
	PublicIP   netip.Addr   // IPv4 underlay address, e.g. 192.0.2.7; zero if none
	PublicIPv6 netip.Addr   // IPv6 underlay address, e.g. 2001:db8:0:1::7; zero if none
	Port       uint16       // UDP port, flannel's default 8285; 0 for an IPIP peer (IP protocol 4 has no ports)

	public4 [4]byte  // PublicIP as bytes, precomputed for the index by public address
	public6 [16]byte // PublicIPv6 as bytes
}

// AddrPort returns the peer's IPv4 UDP endpoint.
func (p *Peer) AddrPort() netip.AddrPort { return netip.AddrPortFrom(p.PublicIP, p.Port) }

// AddrPort6 returns the peer's IPv6 UDP endpoint (invalid without a
// PublicIPv6).
func (p *Peer) AddrPort6() netip.AddrPort { return netip.AddrPortFrom(p.PublicIPv6, p.Port) }

// HasPublic reports whether a is one of the peer's public addresses, the
// source of a datagram from it over either underlay.
func (p *Peer) HasPublic(a netip.Addr) bool {
	return a.IsValid() && (a == p.PublicIP || a == p.PublicIPv6)
}

// ID is the prefix that names the peer in Update's removals: its IPv4
// subnet, or its IPv6 subnet when it has no IPv4 one (an IPv6-only
// network), as flannel names leases.
func (p *Peer) ID() netip.Prefix {
	if p.Subnet.IsValid() {
		return p.Subnet
	}
	return p.Subnet6
}

// normalize validates p and fills the precomputed fields. A 4in6 public IP
// is unmapped; unmasked subnets are masked.
func normalize(p Peer) (Peer, error) {
	if err := normalizeSubnets(&p); err != nil {
		return Peer{}, err
	}
	if p.PublicIP.IsValid() {
		ip := p.PublicIP.Unmap()
		if !ip.Is4() || ip.IsUnspecified() {
			return Peer{}, fmt.Errorf("routetable: peer %v: public IP %v is not a usable IPv4 address", p.ID(), p.PublicIP)
		}
		p.PublicIP, p.public4 = ip, ip.As4()
	}
	if ip := p.PublicIPv6; ip.IsValid() {
		if !ip.Is6() || ip.Is4In6() || ip.IsUnspecified() || ip.Zone() != "" {
			return Peer{}, fmt.Errorf("routetable: peer %v: public IPv6 %v is not a usable IPv6 address", p.ID(), ip)
		}
		p.public6 = ip.As16()
	}
	if !p.PublicIP.IsValid() && !p.PublicIPv6.IsValid() {
		return Peer{}, fmt.Errorf("routetable: peer %v has no public address", p.ID())
	}
	return p, nil
}

func normalizeSubnets(p *Peer) error {
	if p.Subnet.IsValid() && !p.Subnet.Addr().Is4() {
		return fmt.Errorf("routetable: peer subnet %v is not an IPv4 prefix", p.Subnet)
	}
	if p.Subnet6.IsValid() && (!p.Subnet6.Addr().Is6() || p.Subnet6.Addr().Is4In6() || p.Subnet6.Addr().Zone() != "") {
		return fmt.Errorf("routetable: peer IPv6 subnet %v is not an IPv6 prefix", p.Subnet6)
	}
	if !p.Subnet.IsValid() && !p.Subnet6.IsValid() {
		return errors.New("routetable: peer without a subnet")
	}
	p.Subnet, p.Subnet6 = p.Subnet.Masked(), p.Subnet6.Masked()
	return nil
}

// comparePrefix orders peer IDs: IPv4 before IPv6, then by address, then
// by length.
func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// ErrInvalidPeer wraps every rejection by Update and Replace.
var ErrInvalidPeer = errors.New("routetable: invalid peer")
