// Package routetable maps overlay destinations to the peer hosts that own
// them, for the udp backend's forwarder. Readers take an immutable Snapshot
// with one atomic load and look up without locks or allocations; the lease
// watcher publishes a new snapshot per batch of changes.
package routetable

import (
	"errors"
	"fmt"
	"net/netip"
)

// Peer is one remote host: the overlay subnet it leases and the underlay
// address its forwarder listens on.
type Peer struct {
	Subnet   netip.Prefix // IPv4 lease subnet, e.g. 198.18.40.0/24; stored masked
	PublicIP netip.Addr   // IPv4 underlay address, e.g. 192.0.2.7
	Port     uint16       // UDP port, flannel's default 8285

	public4 [4]byte // PublicIP as bytes, precomputed for sockaddrs
}

// PublicIP4 returns the public IP as 4 bytes, ready for a
// unix.SockaddrInet4 or a raw sockaddr_in.
func (p *Peer) PublicIP4() [4]byte { return p.public4 }

// AddrPort returns the peer's UDP endpoint.
func (p *Peer) AddrPort() netip.AddrPort { return netip.AddrPortFrom(p.PublicIP, p.Port) }

// normalize validates p and fills the precomputed fields. A 4in6 public IP
// is unmapped; an unmasked subnet is masked.
func normalize(p Peer) (Peer, error) {
	if !p.Subnet.IsValid() || !p.Subnet.Addr().Is4() {
		return Peer{}, fmt.Errorf("routetable: peer subnet %v is not an IPv4 prefix", p.Subnet)
	}
	p.Subnet = p.Subnet.Masked()
	ip := p.PublicIP.Unmap()
	if !ip.Is4() || ip.IsUnspecified() {
		return Peer{}, fmt.Errorf("routetable: peer %v: public IP %v is not a usable IPv4 address", p.Subnet, p.PublicIP)
	}
	if p.Port == 0 {
		return Peer{}, fmt.Errorf("routetable: peer %v: port 0", p.Subnet)
	}
	p.PublicIP = ip
	p.public4 = ip.As4()
	return p, nil
}

// ErrInvalidPeer wraps every rejection by Update and Replace.
var ErrInvalidPeer = errors.New("routetable: invalid peer")
