package backend

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/flannelu/flannelu/subnet"
)

// CheckPeer asks only for the half of the network's family; validity is
// the subnet.Validator's (see its tests).
func TestCheckPeer(t *testing.T) {
	network := netip.MustParsePrefix("198.18.0.0/16")
	lease := func(sn, pub string) subnet.Lease {
		l := subnet.Lease{Attrs: subnet.LeaseAttrs{}}
		if sn != "" {
			l.Subnet = netip.MustParsePrefix(sn)
		}
		if pub != "" {
			l.Attrs.PublicIP = netip.MustParseAddr(pub)
		}
		return l
	}
	if err := CheckPeer(network, lease("198.18.4.0/24", "192.0.2.4")); err != nil {
		t.Errorf("valid lease: %v", err)
	}
	for _, l := range []subnet.Lease{
		lease("", "192.0.2.4"), lease("2001:db8:100:4::/64", "192.0.2.4"), lease("198.18.4.0/24", ""),
		lease("198.18.4.0/24", "2001:db8::1"),
	} {
		if CheckPeer(network, l) == nil {
			t.Errorf("CheckPeer accepted %+v", l)
		}
	}
}

func TestCheckPeerIPv6(t *testing.T) {
	network := netip.MustParsePrefix("2001:db8:100::/48")
	lease := func(sn, pub string) subnet.Lease {
		l := subnet.Lease{Subnet: netip.MustParsePrefix("198.18.4.0/24"),
			Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.4")}}
		if sn != "" {
			l.IPv6Subnet = netip.MustParsePrefix(sn)
		}
		if pub != "" {
			l.Attrs.PublicIPv6 = netip.MustParseAddr(pub)
		}
		return l
	}
	if err := CheckPeer(network, lease("2001:db8:100:4::/64", "2001:db8:0:1::4")); err != nil {
		t.Errorf("valid IPv6 half: %v", err)
	}
	for _, tc := range []struct{ sn, pub, want string }{
		{"", "2001:db8:0:1::4", "no IPv6 subnet"},
		{"2001:db8:100:4::/64", "", "not an IPv6 address"},
		{"2001:db8:100:4::/64", "192.0.2.4", "not an IPv6 address"},
	} {
		err := CheckPeer(network, lease(tc.sn, tc.pub))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckPeer(%s, %s) = %v, want an error with %q", tc.sn, tc.pub, err, tc.want)
		}
	}
	// The IPv4 network reads only the IPv4 half, and the other way round.
	if err := CheckPeer(netip.MustParsePrefix("198.18.0.0/16"), lease("", "")); err != nil {
		t.Errorf("IPv4 half of a lease without IPv6: %v", err)
	}
}

func TestFamilyOfMappedAddress(t *testing.T) {
	if FamilyOf(netip.MustParseAddr("::ffff:192.0.2.1")) != IPv4 || FamilyOf(netip.MustParseAddr("2001:db8::1")) != IPv6 {
		t.Error("FamilyOf: a 4-in-6 address is IPv4, a real IPv6 address IPv6")
	}
	if IPv4.Contains(netip.Addr{}) || IPv6.Contains(netip.Addr{}) {
		t.Error("the zero address is of no family")
	}
}

// FuzzCheckPeer: whatever a store hands over, CheckPeer never panics, and
// a lease it accepts has a subnet and a public address of the network's
// family.
func FuzzCheckPeer(f *testing.F) {
	f.Add("198.18.0.0/16", "198.18.4.0/24", "192.0.2.4", "", "")
	f.Add("2001:db8:100::/48", "198.18.4.0/24", "192.0.2.4", "2001:db8:100:4::/64", "2001:db8:0:1::4")
	f.Add("2001:db8:100::/48", "", "", "2001:db8:100::/48", "fe80::1")
	f.Add("2001:db8:100::/48", "", "", "::ffff:198.18.4.0/120", "::ffff:192.0.2.4")
	f.Fuzz(func(t *testing.T, network, sn, pub, sn6, pub6 string) {
		n, err := netip.ParsePrefix(network)
		if err != nil {
			return
		}
		var l subnet.Lease
		l.Subnet, _ = netip.ParsePrefix(sn)
		l.Attrs.PublicIP, _ = netip.ParseAddr(pub)
		l.IPv6Subnet, _ = netip.ParsePrefix(sn6)
		l.Attrs.PublicIPv6, _ = netip.ParseAddr(pub6)
		if CheckPeer(n, l) != nil {
			return
		}
		f := FamilyOf(n.Addr())
		if got, public := f.Subnet(l), f.PublicIP(l); !f.Contains(got.Addr()) || !f.Contains(public) {
			t.Fatalf("CheckPeer(%v) accepted %s half %v via %v", n, f, got, public)
		}
	})
}

// PeerSubnet asks only for the subnet of the network's family.
func TestPeerSubnet(t *testing.T) {
	l := subnet.Lease{Subnet: netip.MustParsePrefix("198.18.4.0/24"), Attrs: subnet.LeaseAttrs{PublicIPv6: netip.MustParseAddr("2001:db8:0:1::4")}}
	if sn, err := PeerSubnet(netip.MustParsePrefix("198.18.0.0/16"), l); err != nil || sn != l.Subnet {
		t.Errorf("IPv4 half with only an IPv6 public address = %v, %v; want %v", sn, err, l.Subnet)
	}
	if sn, err := PeerSubnet(netip.MustParsePrefix("2001:db8:100::/48"), l); err == nil {
		t.Errorf("IPv6 half of a lease without an IPv6 subnet = %v, want an error", sn)
	}
}
