package wireguard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/backend/kernel"
	"github.com/flannelu/flannelu/internal/metrics"
	"github.com/flannelu/flannelu/subnet"
)

// Backend is the wireguard backend. Create it with New.
type Backend struct {
	ext  *backend.ExternalInterface
	cfg  Config
	opts Options
	log  *slog.Logger
	nl   *netlink.Handle
	mtu  int // the devices' and the pods' MTU
	plan planner
	set  settings

	mu         sync.Mutex // guards the devices' peers; HandleEvents and Run share it
	devs       [2]*wgDev  // [0] flannel-wg, [1] flannel-wg-v6 (separate mode with IPv6)
	lays       [2]*layout // each device's link layout, after Start
	peerErrors *metrics.Counter
}

var _ backend.Backend = (*Backend)(nil)

// wgDev is one device and the peers this process gave it.
type wgDev struct {
	name     string
	port     int
	families []backend.Family
	dev      device
	link     netlink.Link
	book     *peerBook
}

// New checks the options and the config; nothing is created before Init.
func New(ext *backend.ExternalInterface, opts Options) (*Backend, error) {
	if ext == nil || ext.Iface == nil {
		return nil, errors.New("wireguard: no external interface")
	}
	cfg, err := ParseConfig(opts.BackendJSON)
	if err != nil {
		return nil, err
	}
	v4, v6 := opts.Network.IsValid(), opts.IPv6Network.IsValid()
	if !v4 && !v6 {
		return nil, errors.New("wireguard: neither an IPv4 nor an IPv6 network")
	}
	switch {
	case cfg.Mode == IPv4 && !v4:
		return nil, errors.New("wireguard: Mode ipv4 reaches peers at their PublicIP, which an IPv6-only network does not publish")
	case cfg.Mode == IPv6 && !v6:
		return nil, errors.New("wireguard: Mode ipv6 reaches peers at their PublicIPv6, which only a network with IPv6 (EnableIPv6) publishes")
	}
	underlay := cfg.MTU
	if underlay == 0 {
		underlay = ext.Iface.MTU
	}
	mtu := underlay - Overhead
	if min := map[bool]int{false: minMTU, true: minMTU6}[v6]; mtu < min {
		return nil, fmt.Errorf("wireguard: underlay MTU %d leaves %d for the device, below the %d the network needs", underlay, mtu, min)
	}
	if opts.KeyFile == "" {
		opts.KeyFile = DefaultKeyFile
	}
	if opts.DeviceName == "" {
		opts.DeviceName = DeviceName
	}
	if opts.DeviceNameV6 == "" {
		opts.DeviceNameV6 = DeviceNameV6
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	b := &Backend{ext: ext, cfg: cfg, opts: opts, log: opts.Logger.With("backend", BackendType), mtu: mtu,
		peerErrors: kernel.PeerErrors(opts.Metrics)}
	b.plan = planner{mode: cfg.Mode, v4: v4, v6: v6, port: cfg.ListenPort, portV6: cfg.ListenPortV6,
		publicV4: ext.ExtAddr, publicV6: ext.ExtV6Addr}
	b.set = settings{psk: cfg.PSK, keepalive: cfg.Keepalive}
	if b.set.psk == nil {
		b.set.psk = &wgtypes.Key{} // none: also clears one a kept kernel device has
	}
	b.devs = b.newDevs(v4, v6)
	opts.Metrics.GaugeFunc("flannelu_wireguard_peers", "WireGuard peers configured on this host's devices (one per peer lease and device).",
		func() float64 { return float64(b.peerCount()) })
	if b.nl, err = netlink.NewHandle(); err != nil {
		return nil, fmt.Errorf("wireguard: netlink: %w", err)
	}
	return b, nil
}

// newDevs lays out the devices of the mode: separate, one per family;
// otherwise flannel-wg alone, carrying both.
func (b *Backend) newDevs(v4, v6 bool) (devs [2]*wgDev) {
	if b.plan.separate() {
		if v4 {
			devs[0] = &wgDev{name: b.opts.DeviceName, port: b.cfg.ListenPort, families: []backend.Family{backend.IPv4}}
		}
		if v6 {
			devs[1] = &wgDev{name: b.opts.DeviceNameV6, port: b.cfg.ListenPortV6, families: []backend.Family{backend.IPv6}}
		}
	} else {
		devs[0] = &wgDev{name: b.opts.DeviceName, port: b.cfg.ListenPort}
		if v4 {
			devs[0].families = append(devs[0].families, backend.IPv4)
		}
		if v6 {
			devs[0].families = append(devs[0].families, backend.IPv6)
		}
	}
	for _, d := range devs {
		if d != nil {
			d.book = newPeerBook()
		}
	}
	return devs
}

// Init reads (or makes) the key, opens the devices with it and their
// ports, and returns the lease attributes flanneld publishes: BackendData
// with the key and the IPv4 device's port when the network carries IPv4,
// BackendV6Data with the key and the port IPv6 peers reach this host at.
// That is ListenPortV6 in separate mode, as flanneld's; in the one-device
// modes flanneld publishes ListenPortV6 too, where nothing listens, and
// flannelu the port its one device does listen on (ListenPort).
func (b *Backend) Init(ctx context.Context) (subnet.LeaseAttrs, error) {
	key, created, err := LoadKey(b.opts.KeyFile)
	if err != nil {
		return subnet.LeaseAttrs{}, err
	}
	b.plan.own = key.PublicKey()
	b.log.Info("WireGuard key", "file", b.opts.KeyFile, "created", created, "public_key", b.plan.own.String())
	b.removeUnused()
	for _, d := range b.devs {
		if d == nil {
			continue
		}
		if err := b.open(d, key); err != nil {
			b.closeDevices()
			return subnet.LeaseAttrs{}, err
		}
	}
	attrs := subnet.LeaseAttrs{BackendType: BackendType}
	if b.plan.v4 {
		attrs.PublicIP = b.ext.ExtAddr
		attrs.BackendData = marshalLeaseData(b.plan.own, b.cfg.ListenPort)
	}
	if b.plan.v6 {
		port := b.cfg.ListenPortV6
		if !b.plan.separate() {
			port = b.cfg.ListenPort
		}
		attrs.PublicIPv6 = b.ext.ExtV6Addr
		attrs.BackendV6Data = marshalLeaseData(b.plan.own, port)
	}
	return attrs, nil
}

// removeUnused deletes a device of flanneld's names that this mode does
// not use and an earlier run (of another Mode, or another family set)
// left: its address and route would still draw the network's traffic.
func (b *Backend) removeUnused() {
	for i, name := range []string{b.opts.DeviceName, b.opts.DeviceNameV6} {
		if b.devs[i] != nil {
			continue
		}
		link, err := b.nl.LinkByName(name)
		if err != nil || (link.Type() != "tuntap" && link.Type() != "wireguard") {
			continue
		}
		if err := b.nl.LinkDel(link); err != nil {
			b.log.Warn("cannot delete a WireGuard device this mode does not use", "device", name, "error", err)
			continue
		}
		b.log.Info("deleted a WireGuard device this mode does not use", "device", name, "mode", b.cfg.Mode)
	}
}

// open opens one device with this host's key and its port; a device this
// process made starts without peers (a kept kernel device keeps its own
// until Run has the leases).
func (b *Backend) open(d *wgDev, key wgtypes.Key) error {
	dev, link, err := openDevice(b.nl, d.name, b.mtu, b.log)
	if err != nil {
		return err
	}
	d.dev, d.link = dev, link
	port := d.port
	if err := dev.configure(wgtypes.Config{PrivateKey: &key, ListenPort: &port, ReplacePeers: dev.fresh()}); err != nil {
		return fmt.Errorf("wireguard: %s: key and port %d: %w", d.name, port, err)
	}
	b.log.Info("WireGuard device", "device", d.name, "kind", dev.kind(), "listen_port", port, "mtu", b.mtu)
	return nil
}

// MTU is the underlay MTU less WireGuard's overhead, flanneld's figure.
func (b *Backend) MTU() int { return b.mtu }

// Start gives each device flanneld's layout for the own lease and brings
// it up.
func (b *Backend) Start(ctx context.Context, own subnet.Lease) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, d := range b.devs {
		if d == nil {
			continue
		}
		if d.dev == nil {
			return errors.New("wireguard: Start before Init")
		}
		l := &layout{link: d.link, families: d.families}
		for _, f := range d.families {
			sn, network := f.Subnet(own), b.opts.Network
			if f.Is6() {
				network = b.opts.IPv6Network
			}
			if !sn.IsValid() || !f.Contains(sn.Addr()) || !network.Contains(sn.Addr()) {
				return fmt.Errorf("wireguard: own %s lease %v is not inside network %v", f, sn, network)
			}
			l.own[famIndex(f)], l.network[famIndex(f)] = sn.Masked(), network.Masked()
		}
		if err := l.apply(b.nl, b.log); err != nil {
			return err
		}
		if err := d.dev.up(); err != nil {
			return err
		}
		b.lays[i] = l
	}
	b.log.Info("wireguard backend ready", "mode", b.cfg.Mode, "mtu", b.mtu)
	return nil
}

// HandleEvents turns peer lease changes into peer changes on the devices,
// one configuration per device and batch. A lease of another backend type
// is logged and ignored, as flanneld does; a lease whose half cannot make
// a peer (no key, this host's own key, no address) is logged and counted.
func (b *Backend) HandleEvents(ctx context.Context, events []subnet.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var cfgs [2][]wgtypes.PeerConfig
	var added [2][]wgtypes.Key
	for _, ev := range events {
		lease := ev.Key
		if lease == "" {
			lease = subnet.MakeSubnetKey(ev.Lease.Subnet, ev.Lease.IPv6Subnet)
		}
		var want [2]*peer
		if ev.Type != subnet.EventRemoved && !kernel.Foreign(ev, BackendType, b.log, b.peerErrors) {
			var errs []error
			want, errs = b.plan.peers(ev.Lease)
			for _, err := range errs {
				b.peerErrors.Add(1)
				b.log.Warn("ignoring peer lease", "lease", lease, "error", err)
			}
		}
		for i, d := range b.devs {
			if d == nil {
				continue
			}
			c, isNew, err := d.book.set(lease, want[i], b.set)
			if err != nil {
				b.peerErrors.Add(1)
				b.log.Warn("ignoring peer lease", "lease", lease, "device", d.name, "error", err)
			}
			cfgs[i] = append(cfgs[i], c...)
			if isNew {
				added[i] = append(added[i], want[i].key)
			}
			if want[i] != nil {
				b.log.Info("peer", "lease", lease, "device", d.name, "endpoint", want[i].endpoint, "allowed_ips", want[i].allowed)
			} else if len(c) > 0 {
				b.log.Info("peer removed", "lease", lease, "device", d.name)
			}
		}
	}
	for i, d := range b.devs {
		if d == nil || len(cfgs[i]) == 0 {
			continue
		}
		if err := d.dev.configure(wgtypes.Config{Peers: cfgs[i]}); err != nil {
			b.peerErrors.Add(1)
			b.log.Error("cannot configure peers", "device", d.name, "error", err)
			continue
		}
		d.dev.kick(added[i])
		if l := b.lays[i]; l != nil {
			if err := l.route(b.nl); err != nil {
				b.log.Error("cannot route the network", "error", err)
			}
		}
	}
}

// Run removes the peers a kept kernel device has that no lease wants (the
// leases were read before Run), then waits until ctx is done or a device
// stops by itself, which is fatal. On return wireguard-go's devices stop;
// the kernel's stay as they are.
func (b *Backend) Run(ctx context.Context) error {
	b.pruneStale()
	defer b.closeDevices()
	var stopped <-chan struct{}
	for _, d := range b.devs {
		if d != nil && d.dev.done() != nil {
			stopped = merge(stopped, d.dev.done())
		}
	}
	select {
	case <-ctx.Done():
		return nil
	case <-stopped:
		return errors.New("wireguard: the in-process WireGuard device stopped (its TUN was removed?)")
	}
}

// merge returns a channel closed when a or b is (nil: never).
func merge(a, b <-chan struct{}) <-chan struct{} {
	if a == nil {
		return b
	}
	out := make(chan struct{})
	go func() {
		select {
		case <-a:
		case <-b:
		}
		close(out)
	}()
	return out
}

func (b *Backend) pruneStale() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, d := range b.devs {
		if d == nil || d.dev.fresh() {
			continue
		}
		have, err := d.dev.peerKeys()
		if err != nil {
			b.log.Error("cannot list the kept device's peers", "device", d.name, "error", err)
			continue
		}
		cfgs := d.book.stale(have)
		if len(cfgs) == 0 {
			continue
		}
		if err := d.dev.configure(wgtypes.Config{Peers: cfgs}); err != nil {
			b.log.Error("cannot remove stale peers", "device", d.name, "error", err)
			continue
		}
		b.log.Info("removed peers no lease wants from the kept device", "device", d.name, "peers", len(cfgs))
	}
}

func (b *Backend) closeDevices() {
	for _, d := range b.devs {
		if d != nil && d.dev != nil {
			d.dev.close()
		}
	}
}

func (b *Backend) peerCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, d := range b.devs {
		if d != nil {
			n += len(d.book.byLease)
		}
	}
	return n
}

// PeerErrors counts peer leases that made no peer (see HandleEvents).
func (b *Backend) PeerErrors() uint64 { return b.peerErrors.Value() }

// Own reports the public key this host publishes (after Init).
func (b *Backend) Own() wgtypes.Key { return b.plan.own }
