package wireguard

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/flannelu/flannelu/subnet"
)

// peer is what one device is told about one peer lease.
type peer struct {
	key      wgtypes.Key
	endpoint netip.AddrPort
	allowed  []netip.Prefix
}

func (p peer) equal(o peer) bool {
	return p.key == o.key && p.endpoint == o.endpoint && slices.Equal(p.allowed, o.allowed)
}

// planner decides, as flanneld's handleSubnetEvents does, which peer a
// lease makes on each device: separate mode gives the IPv4 device the
// lease's IPv4 half (BackendData's key, PublicIP, Subnet) and the IPv6
// device its IPv6 half; the one-device modes give flannel-wg one peer
// with both subnets, reached over the family the mode picks.
type planner struct {
	mode         Mode
	v4, v6       bool        // the families the network carries
	own          wgtypes.Key // this host's public key: never a peer
	port, portV6 int         // this host's ListenPort and ListenPortV6
	// publicV4 and publicV6 are this host's underlay addresses, which
	// auto mode's choice reads.
	publicV4, publicV6 netip.Addr
}

// separate reports whether each family has a device of its own.
func (p *planner) separate() bool { return p.mode == Separate }

// peers returns the peer the lease makes on each device, [0] flannel-wg
// and [1] flannel-wg-v6 (separate mode only), and the errors of the halves
// that make none. A half the network does not carry makes none silently.
func (p *planner) peers(l subnet.Lease) (out [2]*peer, errs []error) {
	if p.separate() {
		if p.v4 {
			out[0], errs = p.half(l, false, errs)
		}
		if p.v6 {
			out[1], errs = p.half(l, true, errs)
		}
		return out, errs
	}
	pe, err := p.single(l)
	if err != nil {
		return out, []error{err}
	}
	out[0] = pe
	return out, nil
}

// half is separate mode's peer for one family of the lease.
func (p *planner) half(l subnet.Lease, v6 bool, errs []error) (*peer, []error) {
	data, public, sn, own, family := l.Attrs.BackendData, l.Attrs.PublicIP, l.Subnet, p.port, "IPv4"
	if v6 {
		data, public, sn, own, family = l.Attrs.BackendV6Data, l.Attrs.PublicIPv6, l.IPv6Subnet, p.portV6, "IPv6"
	}
	key, port, err := parseLeaseData(data)
	if err == nil {
		err = p.checkKey(key)
	}
	if err == nil && !public.IsValid() {
		err = errors.New("no public address")
	}
	if err != nil {
		return nil, append(errs, fmt.Errorf("%s: %w", family, err))
	}
	return &peer{key: key, endpoint: netip.AddrPortFrom(public, portOr(port, own)), allowed: []netip.Prefix{sn}}, errs
}

// single is the one-device modes' peer: both subnets, one endpoint. The
// key is flanneld's pick (BackendV6Data's when the network carries IPv6;
// both hold the same key). The port is the one the peer's single device
// listens on: its BackendData Port, which flanneld and flannelu both set
// to ListenPort. flanneld (since v0.26.6) dials an IPv6 endpoint at the
// BackendV6Data Port, which it publishes as ListenPortV6 although its one
// device does not listen there; flannelu publishes the port it listens on
// in both (see Backend.Init), and reads BackendV6Data's Port only when the
// lease has no IPv4 half.
func (p *planner) single(l subnet.Lease) (*peer, error) {
	var key wgtypes.Key
	var port4, port6 uint16
	var err4, err6 error
	if p.v4 {
		key, port4, err4 = parseLeaseData(l.Attrs.BackendData)
	}
	if p.v6 {
		var k6 wgtypes.Key
		if k6, port6, err6 = parseLeaseData(l.Attrs.BackendV6Data); err6 == nil {
			key = k6
		}
	}
	if err := errors.Join(err4, err6); err != nil {
		return nil, err
	}
	if err := p.checkKey(key); err != nil {
		return nil, err
	}
	port := port4
	if !p.v4 {
		port = port6
	}
	public, err := p.endpointAddr(l)
	if err != nil {
		return nil, err
	}
	pe := &peer{key: key, endpoint: netip.AddrPortFrom(public, portOr(port, p.port))}
	if p.v4 {
		pe.allowed = append(pe.allowed, l.Subnet)
	}
	if p.v6 {
		pe.allowed = append(pe.allowed, l.IPv6Subnet)
	}
	return pe, nil
}

// endpointAddr is the peer address the one-device mode reaches it at.
func (p *planner) endpointAddr(l subnet.Lease) (netip.Addr, error) {
	v4, v6 := l.Attrs.PublicIP, l.Attrs.PublicIPv6
	useV6 := false
	switch p.mode {
	case IPv6:
		useV6 = true
	case Auto:
		useV6 = p.autoPicksIPv6(v4, v6)
	}
	if useV6 {
		if !v6.IsValid() {
			return netip.Addr{}, fmt.Errorf("mode %s: the lease has no PublicIPv6", p.mode)
		}
		return v6, nil
	}
	if !v4.IsValid() {
		return netip.Addr{}, fmt.Errorf("mode %s: the lease has no PublicIP", p.mode)
	}
	return v4, nil
}

// autoPicksIPv6 is flanneld's selectMode: IPv4 unless the peer has no
// IPv4 address, or its IPv4 address is private (RFC 1918) while it and
// this host both have public (not RFC 4193) IPv6 ones. flanneld takes
// IPv4 when the peer has no IPv6 address and this host an IPv4 one;
// flannelu also takes IPv6 when the peer has no IPv4 address (an
// IPv6-only network), where flanneld would dial 0.0.0.0.
func (p *planner) autoPicksIPv6(v4, v6 netip.Addr) bool {
	switch {
	case !v6.IsValid():
		return false
	case !v4.IsValid():
		return true
	case !v4.IsPrivate() && p.publicV4.IsValid():
		return false
	}
	return !v6.IsPrivate() && p.publicV6.IsValid() && !p.publicV6.IsPrivate()
}

func (p *planner) checkKey(k wgtypes.Key) error {
	if k == p.own {
		return errors.New("the lease publishes this host's own WireGuard key: two hosts share one key file (each host needs its own; see WIREGUARD_KEY_FILE)")
	}
	return nil
}

// portOr is a lease's port, or (0: a flanneld before v0.26.6 dialled
// every peer at its own port) this host's.
func portOr(port uint16, own int) uint16 {
	if port == 0 {
		return uint16(own)
	}
	return port
}

// peerBook is one device's peers, by the lease they come from.
type peerBook struct {
	byLease map[string]peer
	byKey   map[wgtypes.Key]string // which lease a key belongs to
}

func newPeerBook() *peerBook {
	return &peerBook{byLease: map[string]peer{}, byKey: map[wgtypes.Key]string{}}
}

// settings are what every peer gets alike.
type settings struct {
	psk       *wgtypes.Key
	keepalive time.Duration
}

// set records that lease wants p (nil: no peer) and returns the
// configuration that brings the device there: the lease's old peer
// removed when its key changed or it wants none, the new one (re)written
// with its allowed IPs replaced. added reports a key new to the device.
// A key another lease already has is refused (WireGuard has one peer per
// key: the second lease would take the first one's allowed IPs).
func (b *peerBook) set(lease string, p *peer, s settings) (cfgs []wgtypes.PeerConfig, added bool, err error) {
	old, had := b.byLease[lease]
	if p != nil {
		if other, taken := b.byKey[p.key]; taken && other != lease {
			p, err = nil, fmt.Errorf("its public key is already the peer of %s", other)
		}
	}
	if had && (p == nil || old.key != p.key) {
		cfgs = append(cfgs, wgtypes.PeerConfig{PublicKey: old.key, Remove: true})
		delete(b.byKey, old.key)
		delete(b.byLease, lease)
	}
	if p == nil || (had && old.equal(*p)) {
		return cfgs, false, err
	}
	b.byLease[lease], b.byKey[p.key] = *p, lease
	return append(cfgs, p.config(s)), !had || old.key != p.key, nil
}

// stale removes, of the peers a device has, those no lease in the book
// wants: what a kept device has left from before a restart.
func (b *peerBook) stale(have []wgtypes.Key) []wgtypes.PeerConfig {
	var cfgs []wgtypes.PeerConfig
	for _, k := range have {
		if _, ok := b.byKey[k]; !ok {
			cfgs = append(cfgs, wgtypes.PeerConfig{PublicKey: k, Remove: true})
		}
	}
	return cfgs
}

func (p peer) config(s settings) wgtypes.PeerConfig {
	keepalive := s.keepalive
	c := wgtypes.PeerConfig{
		PublicKey:                   p.key,
		PresharedKey:                s.psk,
		Endpoint:                    net.UDPAddrFromAddrPort(p.endpoint),
		PersistentKeepaliveInterval: &keepalive,
		ReplaceAllowedIPs:           true,
	}
	for _, a := range p.allowed {
		c.AllowedIPs = append(c.AllowedIPs, net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), a.Addr().BitLen())})
	}
	return c
}
