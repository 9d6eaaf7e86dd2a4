package wireguard

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// kernelDevice is the kernel's WireGuard link, configured through wgctrl
// (generic netlink), as flanneld configures it.
type kernelDevice struct {
	name   string
	client *wgctrl.Client
	isNew  bool
}

// openKernel creates the WireGuard link (a netlink LinkAdd of type
// wireguard, flanneld's call), or takes up the one an earlier run left:
// unlike flanneld, which deletes and recreates it, flannelu keeps it with
// its peers and sessions, so that pods keep talking while the daemon
// restarts; peers no lease wants any more are removed once the leases
// are read (Backend.Run). errNoKernelWireGuard when the kernel cannot
// make one.
func openKernel(nl *netlink.Handle, name string, mtu int, log *slog.Logger) (*kernelDevice, error) {
	d := &kernelDevice{name: name, isNew: true}
	la := netlink.NewLinkAttrs()
	la.Name, la.MTU = name, mtu
	err := nl.LinkAdd(&netlink.Wireguard{LinkAttrs: la})
	switch {
	case errors.Is(err, unix.EEXIST):
		d.isNew = false
		log.Info("taking up the WireGuard device an earlier run left, with its peers", "device", name)
	case isNoWireGuard(err):
		return nil, errNoKernelWireGuard
	case err != nil:
		return nil, fmt.Errorf("wireguard: create %s: %w", name, err)
	}
	if d.client, err = wgctrl.New(); err != nil {
		return nil, fmt.Errorf("wireguard: wgctrl: %w", err)
	}
	return d, nil
}

func (d *kernelDevice) configure(cfg wgtypes.Config) error {
	return d.client.ConfigureDevice(d.name, cfg)
}

func (d *kernelDevice) peerKeys() ([]wgtypes.Key, error) {
	dev, err := d.client.Device(d.name)
	if err != nil {
		return nil, err
	}
	keys := make([]wgtypes.Key, 0, len(dev.Peers))
	for _, p := range dev.Peers {
		keys = append(keys, p.PublicKey)
	}
	return keys, nil
}

func (d *kernelDevice) up() error             { return nil }
func (d *kernelDevice) kick([]wgtypes.Key)    {}
func (d *kernelDevice) done() <-chan struct{} { return nil }
func (d *kernelDevice) close()                { d.client.Close() }
func (d *kernelDevice) fresh() bool           { return d.isNew }
func (d *kernelDevice) kind() string          { return "kernel" }
