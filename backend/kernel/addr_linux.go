package kernel

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
)

// EnsureOnlyAddress keeps want as the one address of family f on link:
// any other address of that family is removed (a kept device may carry
// an earlier lease's), IPv6 link-local ones excepted, which the kernel
// gives every device and flanneld leaves alone.
func EnsureOnlyAddress(h *netlink.Handle, link netlink.Link, f Family, want netip.Prefix, log *slog.Logger) error {
	name := link.Attrs().Name
	addrs, err := Addrs(h, f, link)
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
		if ok && p.Addr().IsLinkLocalUnicast() && f.Is6() {
			continue
		}
		log.Info("removing stale address from device", "device", name, "address", a.IPNet.String())
		if err := IgnoreNotExist(h.AddrDel(link, &a)); err != nil {
			return fmt.Errorf("remove address %v from %s: %w", a.IPNet, name, err)
		}
	}
	if have {
		return nil
	}
	if err := h.AddrAdd(link, &netlink.Addr{IPNet: IPNet(want)}); err != nil {
		return fmt.Errorf("add address %v to %s: %w", want, name, err)
	}
	return nil
}

// SetIPv6 turns IPv6 on or off for one device (its disable_ipv6 sysctl in
// the caller's network namespace). A device that carries no IPv6 is
// better without it: the kernel would send router solicitations into it.
// Turning it off is best effort (a kernel without IPv6 has no such file,
// and a device with IPv6 still forwards); only a failure to turn it on is
// an error.
func SetIPv6(device string, on bool) error {
	v := "1"
	if on {
		v = "0"
	}
	if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+device+"/disable_ipv6", []byte(v), 0o644); err != nil && on {
		return fmt.Errorf("enable IPv6 on %s: %w", device, err)
	}
	return nil
}
