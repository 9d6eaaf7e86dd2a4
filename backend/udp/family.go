package udp

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/encap"
	"github.com/flannelu/flannelu/internal/packet"
)

// checkNetworks accepts an IPv4 Network, an IPv6 Network6, or both (dual
// stack); the udp backend carries either family over either underlay.
func checkNetworks(opts Options) error {
	switch {
	case opts.Network.IsValid() && !opts.Network.Addr().Is4():
		return fmt.Errorf("udp backend: Network %v is not an IPv4 prefix", opts.Network)
	case opts.Network6.IsValid() && (!opts.Network6.Addr().Is6() || opts.Network6.Addr().Is4In6()):
		return fmt.Errorf("udp backend: IPv6Network %v is not an IPv6 prefix", opts.Network6)
	case !opts.Network.IsValid() && !opts.Network6.IsValid():
		return errors.New("udp backend: neither an IPv4 nor an IPv6 network to carry")
	}
	return nil
}

// overlayMTUs returns the largest IPv4 and IPv6 inner packets. Each inner
// family travels over the underlay of its own family where the host has
// one (as flannel's vxlan does: IPv4 over IPv4, IPv6 over IPv6), so an
// IPv6 packet has 20 bytes less room than an IPv4 one on a dual-stack
// host; it falls back to the other underlay otherwise.
func overlayMTUs(ext *backend.ExternalInterface, opts Options) (mtu, mtu6 int, err error) {
	has4, has6 := underlays(ext, opts)
	if !has4 && !has6 {
		return 0, 0, fmt.Errorf("udp backend: %s has no address to send from", ext.Iface.Name)
	}
	over := func(own bool, ownOverhead, otherOverhead int) int {
		if own {
			return ext.Iface.MTU - ownOverhead
		}
		return ext.Iface.MTU - otherOverhead
	}
	overhead4 := encapOverhead
	if opts.Encap == encap.IPIP {
		overhead4 = encap.OuterHeaderLen
	}
	mtu, mtu6 = over(has4, overhead4, encapOverhead6), over(has6, encapOverhead6, overhead4)
	if opts.Network.IsValid() && mtu < 576 {
		return 0, 0, fmt.Errorf("udp backend: external MTU %d on %s leaves %d for the overlay, below 576", ext.Iface.MTU, ext.Iface.Name, mtu)
	}
	if opts.Network6.IsValid() && mtu6 < packet.MinIPv6MTU {
		return 0, 0, fmt.Errorf("udp backend: external MTU %d on %s leaves %d for IPv6 in the overlay, below IPv6's 1280", ext.Iface.MTU, ext.Iface.Name, mtu6)
	}
	return mtu, mtu6, nil
}

// underlays reports which sockets the host opens: IPv4 on the interface's
// IPv4 address, IPv6 on its IPv6 address when the network carries IPv6.
func underlays(ext *backend.ExternalInterface, opts Options) (has4, has6 bool) {
	return ext.IfaceAddr.IsValid(), ext.IfaceV6Addr.IsValid() && opts.Network6.IsValid()
}

func (b *Backend) has4() bool { h, _ := underlays(b.ext, b.opts); return h }
func (b *Backend) has6() bool { _, h := underlays(b.ext, b.opts); return h }

// layout is the TUN's configuration for the host's own lease.
func (b *Backend) layout() deviceLayout {
	l := deviceLayout{name: b.dev.Name(), mtu: b.MTU(), network: b.opts.Network, network6: b.opts.Network6, mtu6: b.mtu6}
	if b.own.IsValid() {
		l.addr = netip.PrefixFrom(b.own.Addr(), 32)
	}
	if b.own6.IsValid() {
		l.addr6 = netip.PrefixFrom(b.own6.Addr(), 128)
	}
	return l
}

// listen opens the sockets the workers still lack (a hand-over brings
// them): per worker one IPv4 socket on local (the interface's IPv4 address
// and the backend's port) and, when the network carries IPv6, one IPv6
// socket on the interface's IPv6 address and the same port. Every UDP
// socket has SO_REUSEPORT, so that a restart binds beside a socket a
// process still holds a duplicate of (retire disarmed it); an IPIP socket
// cannot share its address, and needs not: each raw socket receives every
// packet.
func (b *Backend) listen(local netip.AddrPort) error {
	workers := len(b.dev.Queues())
	open := func(addr netip.AddrPort, into *[]*encap.Conn) error {
		for len(*into) < workers {
			c, err := encap.Listen(encap.Config{Encap: b.opts.Encap, Addr: addr, ReusePort: b.opts.Encap != encap.IPIP, GRO: b.vnet, SelfPolled: true, Metrics: b.opts.Metrics})
			if err != nil {
				return fmt.Errorf("listen on %s %v: %w", b.opts.Encap, addr, err)
			}
			*into = append(*into, c)
		}
		return nil
	}
	if b.has4() {
		if err := open(local, &b.conns); err != nil {
			return err
		}
	}
	if b.has6() {
		return open(netip.AddrPortFrom(b.ext.IfaceV6Addr, uint16(b.port)), &b.conns6)
	}
	return nil
}

func (b *Backend) firstConn() *encap.Conn {
	if len(b.conns) > 0 {
		return b.conns[0]
	}
	return b.conns6[0]
}

// listening is the sockets' addresses, for the log.
func (b *Backend) listening() []netip.AddrPort {
	var out []netip.AddrPort
	for _, cs := range [][]*encap.Conn{b.conns, b.conns6} {
		if len(cs) > 0 {
			out = append(out, cs[0].LocalAddr())
		}
	}
	return out
}

func connAt(cs []*encap.Conn, i int) *encap.Conn {
	if i < len(cs) {
		return cs[i]
	}
	return nil
}
