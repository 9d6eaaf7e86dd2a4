package ipip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/backend/hostgw"
	"github.com/flannelu/flannelu/backend/kernel"
	"github.com/flannelu/flannelu/subnet"
)

// errNoIPIP: the kernel knows no ipip device kind (no ipip module, and
// none it can load): the userspace path.
var errNoIPIP = errors.New(`creating an "ipip" device: operation not supported`)

// kernelState is the kernel path's device.
type kernelState struct {
	nl   *netlink.Handle
	link netlink.Link
}

// initKernel creates flanneld's flannel.ipip, or finds it, as flanneld's
// configureIPIPDevice does: local = the interface address, remote any,
// ttl inherit and nopmtudisc (netlink's zero values, as flanneld sends
// them), MTU external - 20. An existing ipip device with another local or
// a remote is recreated; a device of another kind is refused (flanneld
// does not delete a user's device), except the TUN a userspace run of
// flannelu left (persistent), which is flannelu's and is deleted.
func (b *Backend) initKernel() error {
	nl, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("ipip backend: netlink: %w", err)
	}
	b.kernel.nl = nl
	want := b.wantDevice()
	err = nl.LinkAdd(want)
	switch {
	case err == nil:
	case errors.Is(err, unix.EOPNOTSUPP):
		return errNoIPIP
	case errors.Is(err, unix.EEXIST):
		if err := b.replaceExisting(want); err != nil {
			return err
		}
	default:
		return fmt.Errorf("ipip backend: create %s: %w", DeviceName, err)
	}
	link, err := nl.LinkByName(DeviceName)
	if err != nil {
		return fmt.Errorf("ipip backend: %s: %w", DeviceName, err)
	}
	if mtu := b.MTU(); link.Attrs().MTU != mtu {
		b.log.Info("setting the device MTU", "device", DeviceName, "mtu", mtu, "was", link.Attrs().MTU)
		if err := nl.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("ipip backend: set %s MTU to %d: %w", DeviceName, mtu, err)
		}
	}
	b.kernel.link = link
	return nil
}

// wantDevice is flanneld's flannel.ipip.
func (b *Backend) wantDevice() *netlink.Iptun {
	return &netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Name: DeviceName}, Local: kernel.IP(b.ext.IfaceAddr)}
}

// replaceExisting handles a flannel.ipip that exists already.
func (b *Backend) replaceExisting(want *netlink.Iptun) error {
	nl := b.kernel.nl
	existing, err := nl.LinkByName(DeviceName)
	if err != nil {
		return fmt.Errorf("ipip backend: %s: %w", DeviceName, err)
	}
	if existing.Type() == "tuntap" && !b.kernelHasIPIP() {
		return errNoIPIP // a userspace run's TUN, kept for the next one
	}
	if why := incompatible(existing, b.ext.IfaceAddr); why != "" {
		if !ours(existing) {
			return fmt.Errorf("ipip backend: %s isn't an ipip mode device (%s), please remove device and try again", DeviceName, why)
		}
		b.log.Warn("recreating the device", "device", DeviceName, "why", why)
		if err := nl.LinkDel(existing); err != nil {
			return fmt.Errorf("ipip backend: delete %s: %w", DeviceName, err)
		}
		if err := nl.LinkAdd(want); err != nil {
			return fmt.Errorf("ipip backend: create %s: %w", DeviceName, err)
		}
	}
	return nil
}

// probeName is a device created and deleted at once to learn whether the
// kernel has ipip when flannel.ipip exists as a TUN: the kernel answers
// "exists" before "unknown kind".
const probeName = "flannelu-ipip"

// kernelHasIPIP reports whether the kernel can create an ipip device.
func (b *Backend) kernelHasIPIP() bool {
	nl := b.kernel.nl
	err := nl.LinkAdd(&netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Name: probeName}})
	if err == nil || errors.Is(err, unix.EEXIST) {
		if probe, err := nl.LinkByName(probeName); err == nil {
			nl.LinkDel(probe) //nolint:errcheck // a probe left behind is harmless and deleted next time
		}
		return true
	}
	return false
}

// incompatible says why an existing flannel.ipip is not flanneld's device
// for local, or "" when it is.
func incompatible(l netlink.Link, local netip.Addr) string {
	t, ok := l.(*netlink.Iptun)
	if !ok || l.Type() != "ipip" {
		return "a " + l.Type() + " device"
	}
	if a, _ := kernel.Addr(t.Local); a != local {
		return fmt.Sprintf("local %v, want %v", t.Local, local)
	}
	if r, ok := kernel.Addr(t.Remote); ok && !r.IsUnspecified() {
		return fmt.Sprintf("remote %v, want any", t.Remote)
	}
	return ""
}

// ours reports whether an incompatible flannel.ipip may be deleted: an
// ipip device (flanneld recreates those too) or the TUN of a userspace
// run.
func ours(l netlink.Link) bool {
	return l.Type() == "ipip" || l.Type() == "tuntap"
}

// startKernel gives flannel.ipip the lease's network address as /32 and
// brings it up, as flanneld does.
func (b *Backend) startKernel(own subnet.Lease) error {
	nl, link := b.kernel.nl, b.kernel.link
	if err := kernel.EnsureAddress(nl, link, netip.PrefixFrom(own.Subnet.Addr(), 32), b.log); err != nil {
		return fmt.Errorf("ipip backend: %w", err)
	}
	if err := nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("ipip backend: set %s up: %w", DeviceName, err)
	}
	return nil
}

// newRouters makes the route keepers (package hostgw's): with
// DirectRouting, plain routes on the external interface for the peers on
// its link; on the kernel path, `via <PublicIP> dev flannel.ipip onlink`
// for the others.
func (b *Backend) newRouters() error {
	// The keepers route by the peers' addresses; this host's own public
	// IP plays no part (host-gw's check that it is the interface's does
	// not apply: flanneld's ipip has no such rule).
	ext := *b.ext
	ext.ExtAddr, ext.IfaceV6Addr, ext.ExtV6Addr = ext.IfaceAddr, netip.Addr{}, netip.Addr{}
	opts := hostgw.Options{Network: b.opts.Network, ReconcileInterval: b.opts.ReconcileInterval, Logger: b.opts.Logger,
		Netlink: b.kernel.nl, Metrics: b.opts.Metrics, LeaseType: BackendType}
	if b.kernel.nl == nil {
		nl, err := netlink.NewHandle()
		if err != nil {
			return fmt.Errorf("ipip backend: netlink: %w", err)
		}
		b.kernel.nl, opts.Netlink = nl, nl
	}
	// The plain routes' keeper runs without DirectRouting too, with no
	// peers: its reconcile then removes the routes an earlier run with
	// DirectRouting (or the host-gw backend) left.
	direct, err := hostgw.New(&ext, opts)
	if err != nil {
		return err
	}
	b.direct, b.routers = direct, append(b.routers, direct)
	if b.cfg.DirectRouting {
		nl, index := b.kernel.nl, b.ext.Iface.Index
		b.onLink = func(ip netip.Addr) bool {
			on, err := kernel.OnLink(nl, kernel.IP(ip), index)
			if err != nil {
				b.log.Warn("DirectRouting: cannot tell whether the peer is on this link; using the tunnel", "public_ip", ip, "error", err)
			}
			return on
		}
	}
	if b.path == kernelPath {
		opts.Device = &net.Interface{Index: b.kernel.link.Attrs().Index, Name: DeviceName, MTU: b.MTU()}
		opts.OnLink = true
		tunnel, err := hostgw.New(&ext, opts)
		if err != nil {
			return err
		}
		b.tunnel, b.routers = tunnel, append(b.routers, tunnel)
	}
	return nil
}
