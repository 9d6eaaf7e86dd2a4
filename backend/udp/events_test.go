package udp

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/flannelu/flannelu/encap"
	"github.com/flannelu/flannelu/subnet"
)

// A peer whose lease changes to another backend type leaves the route
// table, as the kernel backends remove its entries: its host no longer
// receives our encapsulation. The change is logged as a warning.
func TestLeaseOfAnotherBackendTypeRemovesThePeer(t *testing.T) {
	for _, tc := range []struct {
		encap      encap.Encapsulation
		ours, next string
	}{
		{encap.UDP, "", "vxlan"},
		{encap.UDP, "udp", "host-gw"},
		{encap.IPIP, "ipip", "udp"},
	} {
		var log bytes.Buffer
		b, err := New(dualExt, Options{Encap: tc.encap, Network: netip.MustParsePrefix("198.18.0.0/16"),
			Logger: slog.New(slog.NewTextHandler(&log, nil))})
		if err != nil {
			t.Fatal(err)
		}
		l := dualLease(2, false)
		l.Attrs.BackendType = tc.ours
		b.HandleEvents(context.Background(), added(l))
		dst := [4]byte{198, 18, 2, 7}
		if _, ok := b.routes.Snapshot().Lookup(dst); !ok {
			t.Fatalf("%v: a peer lease of type %q is not routed", tc.encap, tc.ours)
		}
		l.Attrs.BackendType = tc.next
		b.HandleEvents(context.Background(), []subnet.Event{{Type: subnet.EventAdded, Lease: l}})
		if p, ok := b.routes.Snapshot().Lookup(dst); ok {
			t.Errorf("%v: after its lease changed from %q to %q the peer is still routed to %v", tc.encap, tc.ours, tc.next, p.AddrPort())
		}
		if !strings.Contains(log.String(), "level=WARN") || !strings.Contains(log.String(), tc.next) {
			t.Errorf("%v: no warning naming type %q in the log:\n%s", tc.encap, tc.next, log.String())
		}
	}
}
