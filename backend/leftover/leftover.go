// Package leftover removes at start what a flannel backend that is no
// longer configured left in the kernel: a switch of Backend.Type between
// two runs (udp to vxlan, say) must not leave flannel0 and its route to the
// whole network behind, linkdown, beside the new backend's device; nor a
// vxlan device of a previous VNI, nor host-gw's routes via the external
// interface. Only flannel's own device names and flannel's route shape
// are looked at: anything else on the host is left alone.
package leftover

import (
	"encoding/json"
	"log/slog"
	"net/netip"
	"regexp"

	"github.com/vishvananda/netlink"

	"github.com/flannelu/flannelu/backend/vxlan"
)

// Options say what the configured backend keeps and where flannel's
// routes could be.
type Options struct {
	// Backend is the configured Backend.Type (udp, vxlan, host-gw, ...).
	Backend string
	// BackendJSON is the config's Backend object: its VNI names the vxlan
	// device kept, DirectRouting says the backend routes peers via the
	// external interface itself.
	BackendJSON json.RawMessage
	// UDPDevice is the udp backend's TUN name (flannel0).
	UDPDevice string
	// ExtIface is the external interface's index; 0: no route is looked at.
	ExtIface int
	// Networks are the overlay networks (IPv4, IPv6) the config enables.
	Networks []netip.Prefix
	Logger   *slog.Logger
	// Netlink is the handle the kernel is read and changed through; nil:
	// a new one in the calling thread's namespace.
	Netlink *netlink.Handle
}

// devicePatterns are the device names flannel's backends create, by
// backend type: flanneld's names, which flannelu keeps.
var devicePatterns = map[string]*regexp.Regexp{
	"udp":       nil, // Options.UDPDevice
	"vxlan":     regexp.MustCompile(`^flannel(-v6)?\.[0-9]+$`),
	"wireguard": regexp.MustCompile(`^flannel-wg(-v6)?$`),
	"ipip":      regexp.MustCompile(`^flannel\.ipip$`),
}

// deviceKinds are the link kinds flannel's devices may be: the kernel's
// (vxlan, wireguard, ipip) or a TUN (netlink: tuntap) where flannelu carries a backend in
// userspace.
var deviceKinds = map[string]bool{"tuntap": true, "vxlan": true, "wireguard": true, "ipip": true}

// backendOf returns the backend type that creates a device of this name,
// "" for a name that is not flannel's.
func (o Options) backendOf(name string) string {
	if name == o.udpDevice() {
		return "udp"
	}
	for typ, re := range devicePatterns {
		if re != nil && re.MatchString(name) {
			return typ
		}
	}
	return ""
}

func (o Options) udpDevice() string {
	if o.UDPDevice == "" {
		return "flannel0"
	}
	return o.UDPDevice
}

// keepsDevice reports whether the configured backend uses a device of
// this name: vxlan only its own VNI's.
func (o Options) keepsDevice(name string) bool {
	typ := o.backendOf(name)
	if typ != o.Backend {
		return false
	}
	if typ != "vxlan" {
		return true
	}
	vni := o.backendConfig().VNI
	return name == vxlan.DeviceName(vni) || name == vxlan.DeviceNameV6(vni)
}

// keepsGatewayRoutes reports whether the configured backend routes peers
// via the external interface (host-gw; DirectRouting): its own reconcile
// looks after those routes.
func (o Options) keepsGatewayRoutes() bool {
	return o.Backend == "host-gw" || o.backendConfig().DirectRouting
}

// backendConfig reads the two settings that matter here; a config the
// backend will refuse counts as flannel's defaults (nothing is removed
// that the defaults would keep).
func (o Options) backendConfig() vxlan.Config {
	c, err := vxlan.ParseConfig(o.BackendJSON)
	if err != nil {
		return vxlan.Config{VNI: vxlan.DefaultVNI}
	}
	return c
}
