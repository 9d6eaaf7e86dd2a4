package vxlan

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/backend/kernel"
)

// wantDevice is the device flannel would create for this config.
func (b *Backend) wantDevice() *netlink.Vxlan {
	return &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: DeviceName(b.cfg.VNI), MTU: b.MTU()},
		VxlanId:      b.cfg.VNI,
		VtepDevIndex: b.ext.Iface.Index,
		SrcAddr:      kernel.IP(b.ext.IfaceAddr),
		Port:         b.cfg.Port,
		Learning:     b.cfg.Learning,
		GBP:          b.cfg.GBP,
	}
}

// ensureDevice creates the device, or reuses an existing compatible one
// (keeping its MAC); an incompatible one is deleted and recreated, as
// flanneld does. The MTU of a reused device is corrected in place.
func (b *Backend) ensureDevice() (netlink.Link, error) {
	want := b.wantDevice()
	err := b.nl.LinkAdd(want)
	switch {
	case err == nil:
		b.log.Info("created vxlan device", "vni", want.VxlanId, "port", want.Port, "mtu", want.MTU)
	case errors.Is(err, unix.EEXIST):
		if err := b.reuseOrReplace(want); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("vxlan: create %s: %w", want.Name, err)
	}
	// Re-read: the kernel chose the MAC.
	link, err := b.nl.LinkByName(want.Name)
	if err != nil {
		return nil, fmt.Errorf("vxlan: read back %s: %w", want.Name, err)
	}
	if len(link.Attrs().HardwareAddr) != 6 {
		return nil, fmt.Errorf("vxlan: %s has no Ethernet address", want.Name)
	}
	return link, nil
}

func (b *Backend) reuseOrReplace(want *netlink.Vxlan) error {
	existing, err := b.nl.LinkByName(want.Name)
	if err != nil {
		return fmt.Errorf("vxlan: read existing %s: %w", want.Name, err)
	}
	reason := incompatible(want, existing)
	if reason == "" {
		b.log.Info("reusing existing vxlan device", "mac", existing.Attrs().HardwareAddr.String())
		if existing.Attrs().MTU != want.MTU {
			if err := b.nl.LinkSetMTU(existing, want.MTU); err != nil {
				return fmt.Errorf("vxlan: set %s MTU %d: %w", want.Name, want.MTU, err)
			}
		}
		return nil
	}
	b.log.Warn("existing device has an incompatible configuration, recreating it", "reason", reason)
	if err := b.nl.LinkDel(existing); err != nil {
		return fmt.Errorf("vxlan: delete incompatible %s: %w", want.Name, err)
	}
	if err := b.nl.LinkAdd(want); err != nil {
		return fmt.Errorf("vxlan: recreate %s: %w", want.Name, err)
	}
	return nil
}

// incompatible says why an existing link cannot serve as want ("" if it can).
func incompatible(want *netlink.Vxlan, l netlink.Link) string {
	got, ok := l.(*netlink.Vxlan)
	switch {
	case !ok:
		return fmt.Sprintf("type %s, not vxlan", l.Type())
	case got.VxlanId != want.VxlanId:
		return fmt.Sprintf("VNI %d, want %d", got.VxlanId, want.VxlanId)
	case got.VtepDevIndex != want.VtepDevIndex:
		return fmt.Sprintf("underlay device index %d, want %d", got.VtepDevIndex, want.VtepDevIndex)
	case !got.SrcAddr.Equal(want.SrcAddr):
		return fmt.Sprintf("local address %v, want %v", got.SrcAddr, want.SrcAddr)
	case got.Port != want.Port:
		return fmt.Sprintf("port %d, want %d", got.Port, want.Port)
	case got.Learning != want.Learning:
		return fmt.Sprintf("learning %t, want %t", got.Learning, want.Learning)
	case got.GBP != want.GBP:
		return fmt.Sprintf("gbp %t, want %t", got.GBP, want.GBP)
	}
	return ""
}

// ensureAddress keeps exactly the own lease's network address /32 on the
// device. Callers hold b.mu.
func (b *Backend) ensureAddress() error {
	want := netip.PrefixFrom(b.own.Addr(), 32)
	addrs, err := kernel.Addrs(b.nl, b.dev)
	if err != nil {
		return fmt.Errorf("vxlan: %w", err)
	}
	have := false
	for _, a := range addrs {
		p, ok := kernel.Prefix(a.IPNet)
		if ok && p == want {
			have = true
			continue
		}
		b.log.Info("removing stale address from device", "address", a.IPNet.String())
		if err := kernel.IgnoreNotExist(b.nl.AddrDel(b.dev, &a)); err != nil {
			return fmt.Errorf("vxlan: remove address %v: %w", a.IPNet, err)
		}
	}
	if have {
		return nil
	}
	if err := b.nl.AddrAdd(b.dev, &netlink.Addr{IPNet: kernel.IPNet(want)}); err != nil {
		return fmt.Errorf("vxlan: add address %v: %w", want, err)
	}
	return nil
}
