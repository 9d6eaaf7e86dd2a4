package kernel

import (
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/internal/metrics"
	"github.com/flannelu/flannelu/subnet"
)

// Owned reports whether a route destination belongs to the overlay: a
// prefix of network's family strictly inside network. The network itself
// and anything outside it are never ours.
func Owned(network, dst netip.Prefix) bool {
	return backend.FamilyOf(dst.Addr()) == backend.FamilyOf(network.Addr()) && dst.Bits() > network.Bits() && network.Contains(dst.Addr())
}

// Foreign reports whether ev adds or changes a lease of another backend
// type than backendType, which the kernel backends ignore as flanneld
// does: it is logged as a warning and counted in errs, once for all
// families. A removal is never foreign: whatever the lease was, the
// entries made for it go.
func Foreign(ev subnet.Event, backendType string, log *slog.Logger, errs *metrics.Counter) bool {
	if ev.Type == subnet.EventRemoved || ev.Lease.Attrs.BackendType == backendType {
		return false
	}
	errs.Add(1)
	attrs := []any{"subnet", ev.Lease.Subnet, "type", ev.Lease.Attrs.BackendType}
	if ev.Lease.IPv6Subnet.IsValid() {
		attrs = append(attrs, "ipv6_subnet", ev.Lease.IPv6Subnet)
	}
	log.Warn("ignoring peer lease", append(attrs, "error", fmt.Errorf("backend type %q, not %q", ev.Lease.Attrs.BackendType, backendType))...)
	return true
}
