package daemon

import (
	"context"
	"log/slog"
	"net/netip"
	"runtime/debug"
	"time"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/backend/leftover"
	"github.com/flannelu/flannelu/subnet"
)

// removeLeftovers removes, before the backend starts, the devices and
// routes a backend that is no longer configured left (see package
// leftover): after udp, flannel0 and its route; after vxlan, flannel.<VNI>
// with its neighbours and fdb entries; after host-gw, its routes. A
// failure is logged: the new backend can work beside them.
func removeLeftovers(cfg *subnet.Config, ext *backend.ExternalInterface, log *slog.Logger) {
	var networks []netip.Prefix
	if cfg.EnableIPv4 {
		networks = append(networks, cfg.Network)
	}
	if cfg.EnableIPv6 {
		networks = append(networks, cfg.IPv6Network)
	}
	err := leftover.Remove(leftover.Options{Backend: cfg.BackendType, BackendJSON: cfg.Backend,
		ExtIface: ext.Iface.Index, Networks: networks, Logger: log})
	if err != nil {
		log.Warn("could not remove what a backend no longer configured left", "error", err)
	}
}

// afterFirstSnapshot runs once the first snapshot of the leases is
// programmed. A kernel backend removes the entries of peers that were
// deleted or changed while this daemon was down (flanneld leaves them:
// its issue #2554), rather than at the first periodic pass; a failure is
// logged and the periodic passes retry. Then the memory the start-up's
// list took (the whole store's leases or nodes, decoded at once) goes back
// to the system, which otherwise keeps it for minutes after the heap has
// shrunk (BENCHMARKS.md, "Choices measured in the code").
func afterFirstSnapshot(ctx context.Context, be backend.Backend, log *slog.Logger) {
	defer debug.FreeOSMemory()
	r, ok := be.(backend.Reconciler)
	if !ok {
		return
	}
	start := time.Now()
	if err := r.Reconcile(ctx); err != nil && ctx.Err() == nil {
		log.Warn("reconcile at start failed; the periodic pass retries", "error", err)
		return
	}
	log.Info("kernel state reconciled with the peers", "took", time.Since(start).Round(time.Microsecond))
}
