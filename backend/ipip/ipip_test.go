package ipip

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/subnet"
)

func ext() *backend.ExternalInterface {
	a := netip.MustParseAddr("192.0.2.1")
	return &backend.ExternalInterface{Iface: &net.Interface{Name: "eth0", Index: 2, MTU: 1500}, IfaceAddr: a, ExtAddr: a}
}

var network = netip.MustParsePrefix("198.18.0.0/16")

func TestNewRefusesWhatIPIPCannotCarry(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		mtu  int
		want string
	}{
		{"IPv6 network", Options{Network: network, IPv6Network: netip.MustParsePrefix("2001:db8:100::/48")}, 1500, "IPv4 only"},
		{"no IPv4 network", Options{}, 1500, "not an IPv4 prefix"},
		{"bad config", Options{Network: network, BackendJSON: []byte(`{"DirectRouting":"yes"}`)}, 1500, "ipip backend config"},
		{"tiny MTU", Options{Network: network}, 590, "too small"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := ext()
			e.Iface.MTU = tc.mtu
			if _, err := New(e, tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error about %q", err, tc.want)
			}
		})
	}
	b, err := New(ext(), Options{Network: network, BackendJSON: []byte(`{"Type":"ipip","DirectRouting":true}`)})
	if err != nil || !b.cfg.DirectRouting || b.MTU() != 1480 {
		t.Fatalf("New: %v, DirectRouting %v, MTU %d; want true and 1480", err, b != nil && b.cfg.DirectRouting, b.MTU())
	}
}

// recorder is a route keeper that remembers what it was given.
type recorder struct{ got []string }

func (r *recorder) Start(context.Context, subnet.Lease) error { return nil }
func (r *recorder) Run(context.Context) error                 { return nil }
func (r *recorder) HandleEvents(_ context.Context, evs []subnet.Event) {
	for _, ev := range evs {
		r.got = append(r.got, ev.Type.String()+" "+ev.Lease.Subnet.String())
	}
}

func lease(sn, public, typ string) subnet.Lease {
	return subnet.Lease{Subnet: netip.MustParsePrefix(sn), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(public), BackendType: typ}}
}

// TestEventsGoWhereThePeerIs checks the kernel path's split: with
// DirectRouting a peer on the link gets the plain route (and not the
// tunnel's), one off the link the tunnel's (and not the plain one); a
// peer that moves changes sides; a removal leaves both; a lease of
// another type is dropped, removing a peer it replaces.
func TestEventsGoWhereThePeerIs(t *testing.T) {
	b, err := New(ext(), Options{Network: network, BackendJSON: []byte(`{"DirectRouting":true}`)})
	if err != nil {
		t.Fatal(err)
	}
	direct, tunnel := &recorder{}, &recorder{}
	b.direct, b.tunnel, b.path = direct, tunnel, kernelPath
	onLink := map[string]bool{"192.0.2.2": true}
	b.onLink = func(a netip.Addr) bool { return onLink[a.String()] }
	b.HandleEvents(context.Background(), []subnet.Event{
		{Type: subnet.EventAdded, Lease: lease("198.18.2.0/24", "192.0.2.2", "ipip")},
		{Type: subnet.EventAdded, Lease: lease("198.18.3.0/24", "198.51.100.3", "ipip")},
		{Type: subnet.EventChanged, Lease: lease("198.18.2.0/24", "198.51.100.9", "ipip")}, // moved off the link
		{Type: subnet.EventAdded, Lease: lease("198.18.4.0/24", "192.0.2.4", "vxlan")},
		{Type: subnet.EventRemoved, Lease: lease("198.18.3.0/24", "198.51.100.3", "ipip")},
	})
	wantDirect := []string{"added 198.18.2.0/24", "removed 198.18.3.0/24", "removed 198.18.2.0/24", "removed 198.18.4.0/24", "removed 198.18.3.0/24"}
	wantTunnel := []string{"removed 198.18.2.0/24", "added 198.18.3.0/24", "changed 198.18.2.0/24", "removed 198.18.4.0/24", "removed 198.18.3.0/24"}
	if strings.Join(direct.got, ",") != strings.Join(wantDirect, ",") {
		t.Errorf("direct routes got %v, want %v", direct.got, wantDirect)
	}
	if strings.Join(tunnel.got, ",") != strings.Join(wantTunnel, ",") {
		t.Errorf("tunnel routes got %v, want %v", tunnel.got, wantTunnel)
	}
	if b.PeerErrors() != 1 {
		t.Errorf("peer errors %d, want 1 (the vxlan lease)", b.PeerErrors())
	}
}

// TestWithoutDirectRoutingEverythingTunnels: no plain routes at all.
func TestWithoutDirectRoutingEverythingTunnels(t *testing.T) {
	b, err := New(ext(), Options{Network: network})
	if err != nil {
		t.Fatal(err)
	}
	tunnel := &recorder{}
	b.tunnel, b.path = tunnel, kernelPath
	b.onLink = func(netip.Addr) bool {
		t.Fatal("DirectRouting off, yet asked whether a peer is on the link")
		return false
	}
	b.HandleEvents(context.Background(), []subnet.Event{{Type: subnet.EventAdded, Lease: lease("198.18.2.0/24", "192.0.2.2", "ipip")}})
	if len(tunnel.got) != 1 || tunnel.got[0] != "added 198.18.2.0/24" {
		t.Fatalf("tunnel routes got %v", tunnel.got)
	}
}

func TestLeaseAttrsAreFlanneldsIPIP(t *testing.T) {
	attrs := subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.1"), BackendType: BackendType}
	raw, err := subnet.MarshalLeaseAttrs(attrs)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"PublicIP":"192.0.2.1","PublicIPv6":null,"BackendType":"ipip"}`; string(raw) != want {
		t.Fatalf("lease %s, want %s", raw, want)
	}
}
