package wireguard

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/flannelu/flannelu/subnet"
)

var (
	keyA = wgtypes.Key{1}
	keyB = wgtypes.Key{2}
	own  = wgtypes.Key{9}
)

// wgLease is a peer's dual-stack lease as flanneld publishes it: the key
// and a port in each family's data (port 0: no Port, an older flanneld).
func wgLease(k wgtypes.Key, port, port6 int, pub, pub6 string) subnet.Lease {
	l := subnet.Lease{Subnet: netip.MustParsePrefix("198.18.2.0/24"), IPv6Subnet: netip.MustParsePrefix("2001:db8:100:2::/64"),
		Attrs: subnet.LeaseAttrs{BackendType: BackendType}}
	if pub != "" {
		l.Attrs.PublicIP = netip.MustParseAddr(pub)
		l.Attrs.BackendData = data(k, port)
	}
	if pub6 != "" {
		l.Attrs.PublicIPv6 = netip.MustParseAddr(pub6)
		l.Attrs.BackendV6Data = data(k, port6)
	}
	return l
}

func data(k wgtypes.Key, port int) json.RawMessage {
	if port == 0 {
		b, _ := json.Marshal(map[string]string{"PublicKey": k.String()})
		return b
	}
	return marshalLeaseData(k, port)
}

func dualPlanner(m Mode) *planner {
	return &planner{mode: m, v4: true, v6: true, own: own, port: 51820, portV6: 51821,
		publicV4: netip.MustParseAddr("192.0.2.1"), publicV6: netip.MustParseAddr("2001:db8:0:1::1")}
}

func TestPlannerSeparate(t *testing.T) {
	p := dualPlanner(Separate)
	got, errs := p.peers(wgLease(keyA, 4000, 0, "192.0.2.2", "2001:db8:0:1::2"))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	want4 := peer{key: keyA, endpoint: netip.MustParseAddrPort("192.0.2.2:4000"), allowed: []netip.Prefix{netip.MustParsePrefix("198.18.2.0/24")}}
	// Port 0 in BackendV6Data: this host's own ListenPortV6.
	want6 := peer{key: keyA, endpoint: netip.MustParseAddrPort("[2001:db8:0:1::2]:51821"), allowed: []netip.Prefix{netip.MustParsePrefix("2001:db8:100:2::/64")}}
	if got[0] == nil || !got[0].equal(want4) || got[1] == nil || !got[1].equal(want6) {
		t.Errorf("got %+v %+v", got[0], got[1])
	}
	// A lease without its IPv6 half keeps its IPv4 peer; the IPv6 half is an error.
	l := wgLease(keyA, 51820, 0, "192.0.2.2", "")
	got, errs = p.peers(l)
	if got[0] == nil || got[1] != nil || len(errs) != 1 || !strings.Contains(errs[0].Error(), "IPv6: no backend data") {
		t.Errorf("no IPv6 half: %+v %+v %v", got[0], got[1], errs)
	}
}

func TestPlannerOneDevice(t *testing.T) {
	both := []netip.Prefix{netip.MustParsePrefix("198.18.2.0/24"), netip.MustParsePrefix("2001:db8:100:2::/64")}
	for _, tc := range []struct {
		mode     Mode
		lease    subnet.Lease
		endpoint string
	}{
		// The port is BackendData's: the one device listens on ListenPort,
		// whatever BackendV6Data says (flanneld publishes ListenPortV6 there).
		{IPv4, wgLease(keyA, 4000, 51821, "192.0.2.2", "2001:db8:0:1::2"), "192.0.2.2:4000"},
		{IPv6, wgLease(keyA, 4000, 51821, "192.0.2.2", "2001:db8:0:1::2"), "[2001:db8:0:1::2]:4000"},
		{Auto, wgLease(keyA, 4000, 51821, "192.0.2.2", "2001:db8:0:1::2"), "192.0.2.2:4000"},
		// Auto: a private IPv4 peer address with public IPv6 at both ends -> IPv6.
		{Auto, wgLease(keyA, 4000, 51821, "10.0.0.2", "2001:db8:0:1::2"), "[2001:db8:0:1::2]:4000"},
		// ... but not to an RFC 4193 address.
		{Auto, wgLease(keyA, 4000, 51821, "10.0.0.2", "fd00::2"), "10.0.0.2:4000"},
		// Port 0: this host's ListenPort.
		{Auto, wgLease(keyA, 0, 0, "192.0.2.2", "2001:db8:0:1::2"), "192.0.2.2:51820"},
	} {
		got, errs := dualPlanner(tc.mode).peers(tc.lease)
		if len(errs) > 0 || got[0] == nil || got[1] != nil {
			t.Errorf("%s: %+v %v", tc.mode, got, errs)
			continue
		}
		if got[0].endpoint.String() != tc.endpoint || got[0].key != keyA || !slices.Equal(got[0].allowed, both) {
			t.Errorf("%s: %+v, want endpoint %s and both subnets", tc.mode, got[0], tc.endpoint)
		}
	}
	// IPv6 only, auto: the peer has no IPv4 address to dial.
	p := &planner{mode: Auto, v6: true, own: own, port: 51820}
	l := wgLease(keyA, 0, 51820, "", "2001:db8:0:1::2")
	got, errs := p.peers(l)
	if len(errs) > 0 || got[0].endpoint.String() != "[2001:db8:0:1::2]:51820" {
		t.Errorf("IPv6 only: %+v %v", got[0], errs)
	}
}

func TestPlannerRefusesOwnKeyAndBadData(t *testing.T) {
	p := dualPlanner(Separate)
	_, errs := p.peers(wgLease(own, 51820, 51821, "192.0.2.2", "2001:db8:0:1::2"))
	if len(errs) != 2 || !strings.Contains(errs[0].Error(), "this host's own WireGuard key") {
		t.Errorf("own key: %v", errs)
	}
	l := wgLease(keyA, 51820, 51821, "192.0.2.2", "2001:db8:0:1::2")
	l.Attrs.BackendData = json.RawMessage(`{"PublicKey":"AAAA"}`)
	got, errs := dualPlanner(Auto).peers(l)
	if got[0] != nil || len(errs) != 1 {
		t.Errorf("bad key in one mode: %+v %v", got[0], errs)
	}
}

func TestPeerBook(t *testing.T) {
	b := newPeerBook()
	s := settings{psk: &wgtypes.Key{}}
	p1 := &peer{key: keyA, endpoint: netip.MustParseAddrPort("192.0.2.2:51820"), allowed: []netip.Prefix{netip.MustParsePrefix("198.18.2.0/24")}}
	cfgs, added, err := b.set("l1", p1, s)
	if err != nil || !added || len(cfgs) != 1 || cfgs[0].PublicKey != keyA || cfgs[0].Remove || !cfgs[0].ReplaceAllowedIPs {
		t.Fatalf("add: %+v %v %v", cfgs, added, err)
	}
	if cfgs, _, _ := b.set("l1", p1, s); len(cfgs) != 0 {
		t.Errorf("the same peer again: %+v", cfgs)
	}
	// A new endpoint rewrites the peer; a new key removes the old one first.
	moved := *p1
	moved.endpoint = netip.MustParseAddrPort("192.0.2.3:51820")
	if cfgs, added, _ := b.set("l1", &moved, s); len(cfgs) != 1 || added || cfgs[0].Endpoint.String() != "192.0.2.3:51820" {
		t.Errorf("moved: %+v added %v", cfgs, added)
	}
	rekeyed := moved
	rekeyed.key = keyB
	cfgs, added, _ = b.set("l1", &rekeyed, s)
	if len(cfgs) != 2 || !added || !cfgs[0].Remove || cfgs[0].PublicKey != keyA || cfgs[1].PublicKey != keyB {
		t.Errorf("rekeyed: %+v added %v", cfgs, added)
	}
	// Another lease with a key already taken is refused.
	if cfgs, _, err := b.set("l2", &rekeyed, s); err == nil || len(cfgs) != 0 {
		t.Errorf("duplicate key: %+v %v", cfgs, err)
	}
	if got := b.stale([]wgtypes.Key{keyA, keyB}); len(got) != 1 || got[0].PublicKey != keyA || !got[0].Remove {
		t.Errorf("stale: %+v", got)
	}
	// Removal by key.
	if cfgs, _, _ := b.set("l1", nil, s); len(cfgs) != 1 || !cfgs[0].Remove || cfgs[0].PublicKey != keyB {
		t.Errorf("removed: %+v", cfgs)
	}
	if len(b.byLease) != 0 || len(b.byKey) != 0 {
		t.Errorf("book not empty: %+v", b)
	}
}
