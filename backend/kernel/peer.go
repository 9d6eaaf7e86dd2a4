package kernel

import (
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/flannelu/flannelu/metrics"
	"github.com/flannelu/flannelu/subnet"
)

// CheckPeer validates the parts of a peer lease every kernel backend
// programs for network's family: a subnet of that family strictly inside
// the overlay network and a usable public address of that family
// (PublicIP, or PublicIPv6 for an IPv6 network). A lease failing it is
// logged and ignored, never programmed: a subnet outside the network would
// let a peer's store record reroute arbitrary traffic on this host.
func CheckPeer(network netip.Prefix, l subnet.Lease) error {
	f := FamilyOf(network.Addr())
	sn, public := f.Subnet(l), f.PublicIP(l)
	if !sn.IsValid() || !f.Contains(sn.Addr()) {
		return fmt.Errorf("lease has no %s subnet (%v)", f, sn)
	}
	if sn.Bits() <= network.Bits() || !network.Contains(sn.Addr()) {
		return fmt.Errorf("lease subnet %v is not inside network %v", sn, network)
	}
	if sn.Masked() != sn {
		return fmt.Errorf("lease subnet %v has host bits set", sn)
	}
	field := "PublicIP"
	if f.Is6() {
		field = "PublicIPv6"
	}
	if !f.Contains(public) {
		return fmt.Errorf("lease %s %v is not an %s address", field, public, f)
	}
	if err := subnet.UsableUnicast(public); err != nil {
		return fmt.Errorf("lease %s: %w", field, err)
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
