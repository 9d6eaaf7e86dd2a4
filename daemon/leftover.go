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
// failure is logged: the new backend can work beside them. prev (the
// previous subnet.env) tells this network's devices from another
// network's daemon's on the same host.
func removeLeftovers(cfg *subnet.Config, ext *backend.ExternalInterface, prev subnet.Env, log *slog.Logger) {
	var networks, subnets []netip.Prefix
	if cfg.EnableIPv4 {
		networks = append(networks, cfg.Network)
	}
	if cfg.EnableIPv6 {
		networks = append(networks, cfg.IPv6Network)
	}
	for _, sn := range []netip.Prefix{prev.Subnet, prev.IPv6Subnet} {
		if sn.IsValid() {
			subnets = append(subnets, sn.Masked())
		}
	}
	err := leftover.Remove(leftover.Options{Backend: cfg.BackendType, BackendJSON: cfg.Backend,
		ExtIface: ext.Iface.Index, Networks: networks, Subnets: subnets, Logger: log})
	if err != nil {
		log.Warn("could not remove what a backend no longer configured left", "error", err)
	}
}

// afterFirstSnapshot runs once the first snapshot of the leases is
// programmed. A kernel backend removes the entries of peers that were
// deleted or changed while this daemon was down (flanneld leaves them:
// its issue #2554), rather than at the first periodic pass; a failure is
// logged and the periodic passes retry.
func afterFirstSnapshot(ctx context.Context, be backend.Backend, log *slog.Logger) {
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

// freeStartupMemory gives the memory the start-up's list took (the whole
// store's leases or nodes, decoded at once) back to the system, which
// otherwise keeps it for minutes after the heap has shrunk (BENCHMARKS.md,
// "Choices measured in the code"). Called once the backend runs, from a
// goroutine of its own: a forced collection and scavenge takes long on a
// busy machine, and before the backend's Run it delayed a take-over (udp
// forwards only from Run) by as much.
func freeStartupMemory() { debug.FreeOSMemory() }
