package wireguard

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/backend/kernel"
)

// device is one WireGuard device: the kernel's, programmed through wgctrl
// as flanneld programs it, or wireguard-go's in this process where the
// kernel has no WireGuard. Both appear as a link of the same name that
// Start gives flanneld's address and route, and both answer `wg show`.
type device interface {
	// configure applies a wgctrl configuration.
	configure(cfg wgtypes.Config) error
	// peerKeys lists the peers the device has now.
	peerKeys() ([]wgtypes.Key, error)
	// up runs once the link is up: wireguard-go's device opens its port.
	up() error
	// kick has the device handshake with peers at once instead of at
	// their first packet (see userDevice.kick); the kernel's is never
	// restarted, and needs none.
	kick(keys []wgtypes.Key)
	// done is closed when the device stopped by itself (nil: never).
	done() <-chan struct{}
	// close releases the device. The kernel's stays, with its peers and
	// sessions, for a restarted flannelu to take up without a gap;
	// wireguard-go's ends with this process (its TUN stays, see
	// openUserspace).
	close()
	// fresh reports a device made by this process, with no earlier state.
	fresh() bool
	kind() string
}

// errNoKernelWireGuard: the kernel cannot make a WireGuard link.
var errNoKernelWireGuard = errors.New("the kernel has no WireGuard")

// openDevice opens the device name with an MTU: the kernel's when it has
// WireGuard, else wireguard-go's. A link of that name that a previous run
// left is taken up when it is of the kind this host uses (a WireGuard
// link, or the TUN of an in-process device), else deleted first, as
// flanneld recreates a device it finds.
func openDevice(nl *netlink.Handle, name string, mtu int, log *slog.Logger) (device, netlink.Link, error) {
	var dev device
	existing, err := nl.LinkByName(name)
	switch {
	case err == nil && existing.Type() == "tuntap":
		dev, err = openUserspace(name, mtu, log)
	case err == nil && existing.Type() != "wireguard":
		log.Warn("deleting a link of the device's name that is no WireGuard device", "device", name, "type", existing.Type())
		if err := nl.LinkDel(existing); err != nil {
			return nil, nil, fmt.Errorf("wireguard: delete %s (a %s link): %w", name, existing.Type(), err)
		}
		fallthrough
	default:
		dev, err = openKernel(nl, name, mtu, log)
		if errors.Is(err, errNoKernelWireGuard) {
			log.Info("the kernel has no WireGuard: running WireGuard in this process (wireguard-go)", "device", name)
			dev, err = openUserspace(name, mtu, log)
		}
	}
	if err != nil {
		return nil, nil, err
	}
	link, err := nl.LinkByName(name)
	if err != nil {
		dev.close()
		return nil, nil, fmt.Errorf("wireguard: device %s: %w", name, err)
	}
	if link.Attrs().MTU != mtu {
		if err := nl.LinkSetMTU(link, mtu); err != nil {
			dev.close()
			return nil, nil, fmt.Errorf("wireguard: MTU %d on %s: %w", mtu, name, err)
		}
	}
	return dev, link, nil
}

// layout is what Start gives a device's link: for each family it carries,
// the own lease's network address as a host prefix and one route for the
// whole network, scope link, as flanneld's Configure and ConfigureV6 do.
type layout struct {
	link     netlink.Link
	families []backend.Family
	own      [2]netip.Prefix // by family: [0] IPv4, [1] IPv6
	network  [2]netip.Prefix
}

func famIndex(f backend.Family) int {
	if f.Is6() {
		return 1
	}
	return 0
}

// apply puts the addresses on the link, brings it up and routes the
// networks through it. IPv6 is turned on for the link only when it
// carries IPv6: otherwise the kernel would send router solicitations
// into it.
func (l *layout) apply(nl *netlink.Handle, log *slog.Logger) error {
	name := l.link.Attrs().Name
	carries6 := false
	for _, f := range l.families {
		carries6 = carries6 || f.Is6()
	}
	if err := kernel.SetIPv6(name, carries6); err != nil {
		return fmt.Errorf("wireguard: %w", err)
	}
	for _, f := range l.families {
		i := famIndex(f)
		want := netip.PrefixFrom(l.own[i].Addr(), f.Bits())
		if err := kernel.EnsureAddress(nl, l.link, want, log); err != nil {
			return fmt.Errorf("wireguard: %w", err)
		}
	}
	if l.link.Attrs().Flags&net.FlagUp == 0 {
		if err := nl.LinkSetUp(l.link); err != nil {
			return fmt.Errorf("wireguard: set %s up: %w", name, err)
		}
	}
	return l.route(nl)
}

// route (re)installs the network routes: flanneld replaces them at every
// added lease, which also brings back one an operator deleted.
func (l *layout) route(nl *netlink.Handle) error {
	for _, f := range l.families {
		n := l.network[famIndex(f)]
		r := &netlink.Route{LinkIndex: l.link.Attrs().Index, Dst: kernel.IPNet(n), Scope: netlink.SCOPE_LINK}
		if err := nl.RouteReplace(r); err != nil {
			return fmt.Errorf("wireguard: route %v dev %s: %w", n, l.link.Attrs().Name, err)
		}
	}
	return nil
}

// isNoWireGuard reports whether a LinkAdd of type wireguard failed
// because the kernel does not know the type ("Unknown device type").
func isNoWireGuard(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EAFNOSUPPORT)
}
