package hostgw

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/backend/kernel"
	"github.com/flannelu/flannelu/internal/metrics"
	"github.com/flannelu/flannelu/subnet"
)

// Backend is the host-gw backend. Create it with New.
type Backend struct {
	ext      *backend.ExternalInterface
	dev      *net.Interface // where the routes leave: Options.Device, else the external interface
	onLink   bool
	typ      string // the lease type accepted: Options.LeaseType, else BackendType
	interval time.Duration
	log      *slog.Logger
	nl       *netlink.Handle

	mu   sync.Mutex // guards the families' state; HandleEvents and Run share it
	fams []*family  // IPv4 first, then IPv6
	// batch writes the routes of many peers at once (kernel.Batch), in
	// this process's namespace: only when nl is the process's own.
	batch *kernel.Batcher

	peerErrors *metrics.Counter
}

var _ backend.Backend = (*Backend)(nil)

// family is one address family's routes: flanneld's host-gw routes each
// family's peer subnets via that family's public address of the peer.
type family struct {
	b       *Backend
	fam     backend.Family
	network netip.Prefix
	public  netip.Addr             // this host's, published in the lease
	own     netip.Prefix           // zero before Start
	peers   map[netip.Prefix]*peer // desired routes, by peer subnet
}

type peer struct {
	subnet  netip.Prefix
	gateway netip.Addr // the peer's public address of the family
	failing bool       // the last attempt to program it failed (logged once)
}

// New validates the options. For each network given (Network,
// IPv6Network) the external interface needs an address of that family,
// and the public address must be the interface's own: peers route to it
// directly, which only works when it is really on this link.
func New(ext *backend.ExternalInterface, opts Options) (*Backend, error) {
	if ext == nil || ext.Iface == nil {
		return nil, errors.New("host-gw: no external interface")
	}
	b := &Backend{ext: ext, dev: opts.Device, onLink: opts.OnLink, typ: opts.LeaseType, interval: opts.ReconcileInterval,
		log: opts.Logger, nl: opts.Netlink, peerErrors: kernel.PeerErrors(opts.Metrics)}
	if b.dev == nil {
		b.dev = ext.Iface
	}
	if b.typ == "" {
		b.typ = BackendType
	}
	if b.log == nil {
		b.log = slog.Default()
	}
	b.log = b.log.With("backend", b.typ, "iface", b.dev.Name)
	for _, f := range []struct {
		fam           backend.Family
		network       netip.Prefix
		iface, public netip.Addr
		flag          string
	}{
		{backend.IPv4, opts.Network, ext.IfaceAddr, ext.ExtAddr, "--public-ip"},
		{backend.IPv6, opts.IPv6Network, ext.IfaceV6Addr, ext.ExtV6Addr, "--public-ipv6"},
	} {
		if !f.network.IsValid() {
			continue
		}
		switch {
		case !f.fam.Contains(f.network.Addr()):
			return nil, fmt.Errorf("host-gw: network %v is not an %s prefix", f.network, f.fam)
		case !f.fam.Contains(f.iface):
			return nil, fmt.Errorf("host-gw: the %s network %v needs an %s address on %s, have %v", f.fam, f.network, f.fam, ext.Iface.Name, f.iface)
		case f.public != f.iface:
			return nil, fmt.Errorf("host-gw: public IP %v (%s) differs from interface %s address %v; "+
				"host-gw needs peers to reach this host directly at its public IP (use vxlan behind NAT)",
				f.public, f.flag, ext.Iface.Name, f.iface)
		}
		b.fams = append(b.fams, &family{b: b, fam: f.fam, network: f.network.Masked(), public: f.public,
			peers: make(map[netip.Prefix]*peer)})
	}
	if len(b.fams) == 0 {
		return nil, errors.New("host-gw: neither an IPv4 nor an IPv6 network")
	}
	if b.nl == nil {
		var err error
		if b.nl, err = netlink.NewHandle(); err != nil {
			return nil, fmt.Errorf("host-gw: netlink: %w", err)
		}
		b.batch = kernel.NewBatcher(kernel.NewBatch)
	}
	return b, nil
}

// Init returns the lease attributes; host-gw needs no device.
func (b *Backend) Init(ctx context.Context) (subnet.LeaseAttrs, error) {
	attrs := subnet.LeaseAttrs{BackendType: BackendType}
	for _, f := range b.fams {
		if f.fam.Is6() {
			attrs.PublicIPv6 = f.public
		} else {
			attrs.PublicIP = f.public
		}
	}
	return attrs, nil
}

// MTU is the external interface's: nothing is encapsulated.
func (b *Backend) MTU() int { return b.ext.Iface.MTU }

// PeerErrors counts peers that could not be programmed (for example a
// gateway not on our link) or were ignored (foreign backend type, bad
// subnet), per family. A peer still failing on later reconciles is
// counted once.
func (b *Backend) PeerErrors() uint64 { return b.peerErrors.Value() }

// Start records the own subnets, which the reconcile loop never treats as
// peer routes.
func (b *Backend) Start(ctx context.Context, own subnet.Lease) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, f := range b.fams {
		sn := f.fam.Subnet(own)
		if !sn.IsValid() || !f.fam.Contains(sn.Addr()) || !f.network.Contains(sn.Addr()) {
			return fmt.Errorf("host-gw: own %s lease %v is not inside network %v", f.fam, sn, f.network)
		}
		f.own = sn.Masked()
	}
	return nil
}

// HandleEvents applies peer lease changes, of leases the daemon's
// subnet.Validator accepted (inside the network, overlapping no other, a
// usable public address). A lease of another backend type is logged and
// ignored, as flanneld does. Each family is routed on its own: a
// dual-stack peer without a PublicIPv6 keeps its IPv4 route.
// Many routes at once (a start-up, a burst) go to the kernel many per
// system call (kernel.Batcher).
func (b *Backend) HandleEvents(ctx context.Context, events []subnet.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	batch := b.batch.For(len(events), b.log)
	for _, ev := range events {
		foreign := kernel.Foreign(ev, b.typ, b.log, b.peerErrors)
		for _, f := range b.fams {
			f.handle(ev, foreign, batch)
		}
	}
	b.batch.Flush(batch, b.log)
}

func (f *family) handle(ev subnet.Event, foreign bool, batch *kernel.Batch) {
	key := f.fam.Subnet(ev.Lease).Masked()
	old, known := f.peers[key]
	if ev.Type == subnet.EventRemoved || foreign {
		if known {
			delete(f.peers, key)
			f.remove(old)
		}
		return
	}
	if err := backend.CheckPeer(f.network, ev.Lease); err != nil {
		f.b.peerErrors.Add(1)
		f.b.log.Warn("ignoring peer lease", "subnet", f.fam.Subnet(ev.Lease), "family", f.fam.String(), "error", err)
		if known {
			delete(f.peers, key)
			f.remove(old)
		}
		return
	}
	p := &peer{subnet: key, gateway: f.fam.PublicIP(ev.Lease)}
	f.peers[key] = p
	if batch != nil {
		batch.RouteReplace(f.route(p), func(err error) { f.programmed(p, err) }) //nolint:errcheck // reported through the callback
		return
	}
	f.program(p) // replaces a changed peer's route in place
}

func (f *family) route(p *peer) *netlink.Route {
	r := &netlink.Route{LinkIndex: f.b.dev.Index, Dst: kernel.IPNet(p.subnet), Gw: kernel.IP(p.gateway)}
	if f.b.onLink {
		r.Flags = int(netlink.FLAG_ONLINK)
	}
	return r
}

// program installs the peer's route. A failure (typically ENETUNREACH:
// the gateway is not on our link) is logged once per failing spell and
// counted; the reconcile loop keeps retrying it quietly.
func (f *family) program(p *peer) { f.programmed(p, f.b.nl.RouteReplace(f.route(p))) }

// programmed logs and counts the outcome of writing p's route.
func (f *family) programmed(p *peer, err error) {
	log := f.b.log
	switch {
	case err == nil && p.failing:
		p.failing = false
		log.Info("peer route installed after earlier failures", "subnet", p.subnet, "gateway", p.gateway)
	case err == nil:
		log.Debug("peer route installed", "subnet", p.subnet, "gateway", p.gateway)
	case !p.failing:
		p.failing = true
		f.b.peerErrors.Add(1)
		log.Error("cannot route to peer", "subnet", p.subnet, "gateway", p.gateway, "hint", hint(err), "error", err)
	default:
		log.Debug("peer route still failing", "subnet", p.subnet, "gateway", p.gateway, "error", err)
	}
}

func hint(err error) string {
	if errors.Is(err, unix.ENETUNREACH) || errors.Is(err, unix.EINVAL) {
		return "the peer's public IP is not on this host's link; host-gw needs all hosts on one layer-2 network"
	}
	return ""
}

func (f *family) remove(p *peer) {
	if err := kernel.IgnoreNotExist(f.b.nl.RouteDel(f.route(p))); err != nil {
		f.b.peerErrors.Add(1)
		f.b.log.Error("cannot delete peer route", "subnet", p.subnet, "gateway", p.gateway, "error", err)
		return
	}
	f.b.log.Debug("peer route removed", "subnet", p.subnet)
}

// Reconcile runs one reconcile pass now (backend.Reconciler): the routes
// of peers it was not given go, missing ones are added.
func (b *Backend) Reconcile(context.Context) error { return kernel.Locked(&b.mu, b.reconcile) }

// Run reconciles every ReconcileInterval until ctx is done and returns
// nil, leaving the routes in place. One pass covers both families.
func (b *Backend) Run(ctx context.Context) error {
	return kernel.Reconcile(ctx, b.interval, b.log, b.Reconcile)
}

// reconcile runs one pass over every family. Callers hold b.mu.
func (b *Backend) reconcile() error { return kernel.Each(b.fams, (*family).reconcile) }

// reconcile deletes owned routes no peer wants and re-adds missing ones.
// Callers hold the Backend's mutex.
func (f *family) reconcile() error {
	if !f.own.IsValid() {
		return nil // not started
	}
	nl, log := f.b.nl, f.b.log
	routes, err := kernel.Routes(nl, f.fam, f.b.dev.Index)
	if err != nil {
		return fmt.Errorf("host-gw: %w", err)
	}
	missing := make(map[netip.Prefix]*peer, len(f.peers))
	for k, p := range f.peers {
		missing[k] = p
	}
	for i := range routes {
		r := &routes[i]
		dst, ok := kernel.Prefix(r.Dst)
		if !ok || r.Gw == nil || !kernel.Flannels(r) || dst == f.own || !kernel.Owned(f.network, dst) {
			continue // not ours
		}
		if p, ok := missing[dst]; ok && r.Gw.Equal(kernel.IP(p.gateway)) {
			delete(missing, dst)
			continue
		}
		if err := kernel.IgnoreNotExist(nl.RouteDel(r)); err != nil {
			log.Error("reconcile: cannot delete stale route", "route", r.String(), "error", err)
			continue
		}
		log.Info("reconcile: deleted stale route", "route", r.String())
	}
	for _, p := range missing {
		if !p.failing {
			log.Info("reconcile: restoring missing route", "subnet", p.subnet, "gateway", p.gateway)
		}
		f.program(p)
	}
	return nil
}
