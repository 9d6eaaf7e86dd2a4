package kernel

import (
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/flannelu/flannelu/internal/metrics"
	"github.com/flannelu/flannelu/subnet"
)

// CheckPeer says whether a peer lease has the half network's family needs:
// a subnet and a public address of that family. Everything else about a
// lease (its subnet strictly inside the network, no overlap with this
// host's or an earlier peer's, a usable public address, backend data this
// backend can use) is the daemon's subnet.Validator's rule, the same for
// every backend: backends see only the leases it accepted. A dual-stack
// lease may still lack its IPv6 public address (the Validator requires
// PublicIPv6 only on an IPv6-only network); then only its IPv4 half is
// programmed.
func CheckPeer(network netip.Prefix, l subnet.Lease) error {
	f := FamilyOf(network.Addr())
	sn, public := f.Subnet(l), f.PublicIP(l)
	if !sn.IsValid() || !f.Contains(sn.Addr()) {
		return fmt.Errorf("lease has no %s subnet (%v)", f, sn)
	}
	if !f.Contains(public) {
		field := "PublicIP"
		if f.Is6() {
			field = "PublicIPv6"
		}
		return fmt.Errorf("lease %s %v is not an %s address", field, public, f)
	}
	return nil
}

// Owned reports whether a route destination belongs to the overlay: a
// prefix of network's family strictly inside network. The network itself
// and anything outside it are never ours.
func Owned(network, dst netip.Prefix) bool {
	return FamilyOf(dst.Addr()) == FamilyOf(network.Addr()) && dst.Bits() > network.Bits() && network.Contains(dst.Addr())
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
