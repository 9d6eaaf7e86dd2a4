package vxlan

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/backend/kernel"
)

// vtep is one family's half of the backend, as flanneld splits it:
// flannel.<VNI> over the IPv4 underlay carries the IPv4 network,
// flannel-v6.<VNI> over the IPv6 underlay the IPv6 network. Each has its
// own VTEP MAC (BackendData, BackendV6Data), address, peers and entries.
// The Backend's mutex guards every field set after New.
type vtep struct {
	b       *Backend
	fam     backend.Family
	name    string       // flannel.<VNI> or flannel-v6.<VNI>
	network netip.Prefix // the family's overlay network
	local   netip.Addr   // the interface address the VXLAN packets leave from
	public  netip.Addr   // the address peers send to, published in the lease
	log     *slog.Logger

	dev   netlink.Link          // nil before Init
	own   netip.Prefix          // the lease's subnet of this family; zero before Start
	peers map[netip.Prefix]peer // desired state, by peer subnet
}

// wantDevice is the device flannel would create for this config. The IPv6
// device's MTU is what the kernel gives it over an IPv6 underlay either
// way: flanneld v0.20.2 asks for none, v0.28 for the IPv4 value, which the
// kernel lowers.
func (v *vtep) wantDevice() *netlink.Vxlan {
	mtu := v.b.MTU()
	if v.fam.Is6() {
		mtu = min(mtu, v.b.ext.Iface.MTU-OverheadV6)
	}
	return &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: v.name, MTU: mtu},
		VxlanId:      v.b.cfg.VNI,
		VtepDevIndex: v.b.ext.Iface.Index,
		SrcAddr:      kernel.IP(v.local),
		Port:         v.b.cfg.Port,
		Learning:     v.b.cfg.Learning,
		GBP:          v.b.cfg.GBP,
	}
}

// ensureDevice creates the device, or reuses an existing compatible one
// (keeping its MAC); an incompatible one is deleted and recreated, as
// flanneld does. The MTU of a reused device is corrected in place.
func (v *vtep) ensureDevice() (netlink.Link, error) {
	want := v.wantDevice()
	err := v.b.nl.LinkAdd(want)
	switch {
	case err == nil:
		v.log.Info("created vxlan device", "vni", want.VxlanId, "port", want.Port, "mtu", want.MTU, "local", v.local)
	case errors.Is(err, unix.EEXIST):
		if err := v.reuseOrReplace(want); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("vxlan: create %s: %w", want.Name, err)
	}
	// Re-read: the kernel chose the MAC.
	link, err := v.b.nl.LinkByName(want.Name)
	if err != nil {
		return nil, fmt.Errorf("vxlan: read back %s: %w", want.Name, err)
	}
	if len(link.Attrs().HardwareAddr) != 6 {
		return nil, fmt.Errorf("vxlan: %s has no Ethernet address", want.Name)
	}
	return link, nil
}

func (v *vtep) reuseOrReplace(want *netlink.Vxlan) error {
	nl := v.b.nl
	existing, err := nl.LinkByName(want.Name)
	if err != nil {
		return fmt.Errorf("vxlan: read existing %s: %w", want.Name, err)
	}
	reason := incompatible(want, existing)
	if reason == "" {
		v.log.Info("reusing existing vxlan device", "mac", existing.Attrs().HardwareAddr.String())
		if existing.Attrs().MTU != want.MTU {
			if err := nl.LinkSetMTU(existing, want.MTU); err != nil {
				return fmt.Errorf("vxlan: set %s MTU %d: %w", want.Name, want.MTU, err)
			}
		}
		return nil
	}
	v.log.Warn("existing device has an incompatible configuration, recreating it", "reason", reason)
	if err := nl.LinkDel(existing); err != nil {
		return fmt.Errorf("vxlan: delete incompatible %s: %w", want.Name, err)
	}
	if err := nl.LinkAdd(want); err != nil {
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

// start records the own subnet, puts its address on the device and brings
// the device up.
func (v *vtep) start(own netip.Prefix) error {
	if !own.IsValid() || !v.fam.Contains(own.Addr()) || !v.network.Contains(own.Addr()) {
		return fmt.Errorf("vxlan: own %s lease %v is not inside network %v", v.fam, own, v.network)
	}
	if v.dev == nil {
		return errors.New("vxlan: Start before Init")
	}
	v.own = own.Masked()
	if err := v.ensureAddress(); err != nil {
		return err
	}
	if err := v.b.nl.LinkSetUp(v.dev); err != nil {
		return fmt.Errorf("vxlan: set %s up: %w", v.name, err)
	}
	return nil
}

// ensureAddress keeps exactly the own lease's network address as a host
// prefix (/32 or /128) among the device's addresses of its family.
func (v *vtep) ensureAddress() error {
	if err := kernel.EnsureAddress(v.b.nl, v.dev, netip.PrefixFrom(v.own.Addr(), v.fam.Bits()), v.log); err != nil {
		return fmt.Errorf("vxlan: %w", err)
	}
	return nil
}

// ensureUp brings the device up if someone took it down.
func (v *vtep) ensureUp() error {
	dev, err := v.b.nl.LinkByIndex(v.dev.Attrs().Index)
	if err != nil {
		return fmt.Errorf("vxlan: device %s: %w", v.name, err)
	}
	if dev.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	v.log.Warn("device was down, bringing it up")
	if err := v.b.nl.LinkSetUp(dev); err != nil {
		return fmt.Errorf("vxlan: set %s up: %w", v.name, err)
	}
	return nil
}
