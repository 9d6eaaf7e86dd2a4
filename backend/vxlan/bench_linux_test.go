package vxlan

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/flannelu/flannelu/subnet"
)

const benchPeers = 250

func benchBackend(b *testing.B) (*Backend, []subnet.Event) {
	ns := node(b)
	be, err := New(ns.External(b, "ext0", "192.0.2.1/24"), Options{
		Network: network, ReconcileInterval: time.Hour, Netlink: ns.NL,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	attrs, err := be.Init(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	if err := be.Start(context.Background(), subnet.Lease{Subnet: own1, Attrs: attrs}); err != nil {
		b.Fatal(err)
	}
	evs := make([]subnet.Event, benchPeers)
	for i := range evs {
		evs[i] = subnet.Event{Type: subnet.EventAdded, Lease: vxLease(fmt.Sprintf("198.18.%d.0/24", i+2),
			fmt.Sprintf("198.51.100.%d", 1+i%250), fmt.Sprintf("02:00:5e:00:%02x:%02x", i>>8, i&0xff))}
	}
	return be, evs
}

// BenchmarkPeerChurn: add then remove benchPeers peers (neigh+fdb+route each).
func BenchmarkPeerChurn(b *testing.B) {
	be, evs := benchBackend(b)
	removes := make([]subnet.Event, len(evs))
	for i, e := range evs {
		removes[i] = subnet.Event{Type: subnet.EventRemoved, Lease: e.Lease}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		be.HandleEvents(context.Background(), evs)
		be.HandleEvents(context.Background(), removes)
	}
	b.ReportMetric(float64(2*len(evs)*b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkReconcileSteady: one reconcile pass over benchPeers correct peers.
func BenchmarkReconcileSteady(b *testing.B) {
	be, evs := benchBackend(b)
	be.HandleEvents(context.Background(), evs)
	if n := be.PeerErrors(); n != 0 {
		b.Fatalf("PeerErrors %d", n)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		be.mu.Lock()
		err := be.reconcile()
		be.mu.Unlock()
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(evs)*b.N)/b.Elapsed().Seconds(), "peers/s")
}
