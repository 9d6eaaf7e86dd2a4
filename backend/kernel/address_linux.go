package kernel

import (
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/flannelu/flannelu/backend"
	"github.com/vishvananda/netlink"
)

// EnsureAddress keeps want (a lease's network address as /32 or /128) as
// the only address of its family on link, as flanneld keeps its devices';
// IPv6 link-local addresses, which the kernel gives every device, are left
// alone. Removals are logged.
func EnsureAddress(h *netlink.Handle, link netlink.Link, want netip.Prefix, log *slog.Logger) error {
	fam := backend.FamilyOf(want.Addr())
	addrs, err := Addrs(h, fam, link)
	if err != nil {
		return err
	}
	have := false
	for _, a := range addrs {
		p, ok := Prefix(a.IPNet)
		if ok && p == want {
			have = true
			continue
		}
		if ok && p.Addr().IsLinkLocalUnicast() && fam.Is6() {
			continue
		}
		log.Info("removing stale address from device", "address", a.IPNet.String())
		if err := IgnoreNotExist(h.AddrDel(link, &a)); err != nil {
			return fmt.Errorf("remove address %v: %w", a.IPNet, err)
		}
	}
	if have {
		return nil
	}
	if err := h.AddrAdd(link, &netlink.Addr{IPNet: IPNet(want)}); err != nil {
		return fmt.Errorf("add address %v to %s: %w", want, link.Attrs().Name, err)
	}
	return nil
}
