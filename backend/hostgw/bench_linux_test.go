package hostgw

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
	if err := be.Start(context.Background(), subnet.Lease{Subnet: own1}); err != nil {
		b.Fatal(err)
	}
	evs := make([]subnet.Event, benchPeers)
	for i := range evs {
		evs[i] = subnet.Event{Type: subnet.EventAdded,
			Lease: gwLease(fmt.Sprintf("198.18.%d.0/24", i+2), fmt.Sprintf("192.0.2.%d", 2+i%200))}
	}
	return be, evs
}

// BenchmarkPeerChurn: add then remove benchPeers peers (one route each).
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

// BenchmarkReconcileSteady: one reconcile pass over benchPeers correct routes.
func BenchmarkReconcileSteady(b *testing.B) {
	be, evs := benchBackend(b)
	be.HandleEvents(context.Background(), evs)
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
	b.ReportMetric(float64(len(evs)*b.N)/b.Elapsed().Seconds(), "routes/s")
}
