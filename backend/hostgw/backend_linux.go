package hostgw

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/backend/kernel"
	"github.com/flannelu/flannelu/metrics"
	"github.com/flannelu/flannelu/subnet"
)

// Backend is the host-gw backend. Create it with New.
type Backend struct {
	ext      *backend.ExternalInterface
	network  netip.Prefix
	interval time.Duration
	log      *slog.Logger
	nl       *netlink.Handle

	mu    sync.Mutex // guards own and peers; HandleEvents and Run share it
	own   netip.Prefix
	peers map[netip.Prefix]*peer // desired routes, by peer subnet

	peerErrors *metrics.Counter
}

var _ backend.Backend = (*Backend)(nil)

type peer struct {
	subnet  netip.Prefix
	gateway netip.Addr // the peer's PublicIP
	failing bool       // the last attempt to program it failed (logged once)
}

// New validates the options. It refuses an external interface whose
// public IP is not the interface's own address: peers route to the
// public IP directly, which only works when it is really on this link.
func New(ext *backend.ExternalInterface, opts Options) (*Backend, error) {
	if ext == nil || ext.Iface == nil {
		return nil, errors.New("host-gw: no external interface")
	}
	if !ext.IfaceAddr.Is4() {
		return nil, fmt.Errorf("host-gw: interface address %v is not IPv4", ext.IfaceAddr)
	}
	if ext.ExtAddr != ext.IfaceAddr {
		return nil, fmt.Errorf("host-gw: public IP %v differs from interface %s address %v; "+
			"host-gw needs peers to reach this host directly at its public IP (use vxlan behind NAT)",
			ext.ExtAddr, ext.Iface.Name, ext.IfaceAddr)
	}
	if !opts.Network.IsValid() || !opts.Network.Addr().Is4() {
		return nil, fmt.Errorf("host-gw: Network %v is not an IPv4 prefix", opts.Network)
	}
	b := &Backend{
		ext: ext, network: opts.Network.Masked(), interval: opts.ReconcileInterval,
		log: opts.Logger, nl: opts.Netlink, peers: make(map[netip.Prefix]*peer),
		peerErrors: kernel.PeerErrors(opts.Metrics),
	}
	if b.log == nil {
		b.log = slog.Default()
	}
	b.log = b.log.With("backend", BackendType, "iface", ext.Iface.Name)
	if b.nl == nil {
		var err error
		if b.nl, err = netlink.NewHandle(); err != nil {
			return nil, fmt.Errorf("host-gw: netlink: %w", err)
		}
	}
	return b, nil
}

// Init returns the lease attributes; host-gw needs no device.
func (b *Backend) Init(ctx context.Context) (subnet.LeaseAttrs, error) {
	return subnet.LeaseAttrs{PublicIP: b.ext.ExtAddr, BackendType: BackendType}, nil
}

// MTU is the external interface's: nothing is encapsulated.
func (b *Backend) MTU() int { return b.ext.Iface.MTU }

// PeerErrors counts peers that could not be programmed (for example a
// gateway not on our link) or were ignored (foreign backend type, bad
// subnet). A peer still failing on later reconciles is counted once.
func (b *Backend) PeerErrors() uint64 { return b.peerErrors.Value() }

// Start records the own subnet, which the reconcile loop never treats as
// a peer route.
func (b *Backend) Start(ctx context.Context, own subnet.Lease) error {
	if !own.Subnet.Addr().Is4() || !b.network.Contains(own.Subnet.Addr()) {
		return fmt.Errorf("host-gw: own lease %v is not inside network %v", own.Subnet, b.network)
	}
	b.mu.Lock()
	b.own = own.Subnet.Masked()
	b.mu.Unlock()
	return nil
}

// HandleEvents applies peer lease changes. A lease of another backend
// type is logged and ignored, as flanneld does.
func (b *Backend) HandleEvents(ctx context.Context, events []subnet.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ev := range events {
		b.handle(ev)
	}
}

func (b *Backend) handle(ev subnet.Event) {
	key := ev.Lease.Subnet.Masked()
	old, known := b.peers[key]
	if ev.Type == subnet.EventRemoved {
		if known {
			delete(b.peers, key)
			b.remove(old)
		}
		return
	}
	if err := b.check(ev.Lease); err != nil {
		b.peerErrors.Add(1)
		b.log.Warn("ignoring peer lease", "subnet", ev.Lease.Subnet, "type", ev.Lease.Attrs.BackendType, "error", err)
		if known {
			delete(b.peers, key)
			b.remove(old)
		}
		return
	}
	p := &peer{subnet: key, gateway: ev.Lease.Attrs.PublicIP}
	b.peers[key] = p
	b.program(p) // replaces a changed peer's route in place
}

func (b *Backend) check(l subnet.Lease) error {
	if l.Attrs.BackendType != BackendType {
		return fmt.Errorf("backend type %q, not %q", l.Attrs.BackendType, BackendType)
	}
	if err := kernel.CheckPeer(b.network, l); err != nil {
		return err
	}
	if l.Subnet.Masked() == b.own {
		return fmt.Errorf("subnet %v is this host's own lease", l.Subnet)
	}
	return nil
}

func (b *Backend) route(p *peer) *netlink.Route {
	return &netlink.Route{LinkIndex: b.ext.Iface.Index, Dst: kernel.IPNet(p.subnet), Gw: kernel.IP(p.gateway)}
}

// program installs the peer's route. A failure (typically ENETUNREACH:
// the gateway is not on our link) is logged once per failing spell and
// counted; the reconcile loop keeps retrying it quietly.
func (b *Backend) program(p *peer) {
	err := b.nl.RouteReplace(b.route(p))
	switch {
	case err == nil && p.failing:
		p.failing = false
		b.log.Info("peer route installed after earlier failures", "subnet", p.subnet, "gateway", p.gateway)
	case err == nil:
		b.log.Debug("peer route installed", "subnet", p.subnet, "gateway", p.gateway)
	case !p.failing:
		p.failing = true
		b.peerErrors.Add(1)
		b.log.Error("cannot route to peer", "subnet", p.subnet, "gateway", p.gateway, "hint", hint(err), "error", err)
	default:
		b.log.Debug("peer route still failing", "subnet", p.subnet, "gateway", p.gateway, "error", err)
	}
}

func hint(err error) string {
	if errors.Is(err, unix.ENETUNREACH) || errors.Is(err, unix.EINVAL) {
		return "the peer's public IP is not on this host's link; host-gw needs all hosts on one layer-2 network"
	}
	return ""
}

func (b *Backend) remove(p *peer) {
	if err := kernel.IgnoreNotExist(b.nl.RouteDel(b.route(p))); err != nil {
		b.peerErrors.Add(1)
		b.log.Error("cannot delete peer route", "subnet", p.subnet, "gateway", p.gateway, "error", err)
		return
	}
	b.log.Debug("peer route removed", "subnet", p.subnet)
}

// Run reconciles every ReconcileInterval until ctx is done and returns
// nil, leaving the routes in place.
func (b *Backend) Run(ctx context.Context) error {
	return kernel.Reconcile(ctx, b.interval, b.log, func(context.Context) error {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.reconcile()
	})
}

// reconcile deletes owned routes no peer wants and re-adds missing ones.
// Callers hold b.mu.
func (b *Backend) reconcile() error {
	if !b.own.IsValid() {
		return nil // not started
	}
	routes, err := kernel.Routes(b.nl, b.ext.Iface.Index)
	if err != nil {
		return fmt.Errorf("host-gw: %w", err)
	}
	missing := make(map[netip.Prefix]*peer, len(b.peers))
	for k, p := range b.peers {
		missing[k] = p
	}
	for i := range routes {
		r := &routes[i]
		dst, ok := kernel.Prefix(r.Dst)
		if !ok || r.Gw == nil || r.Protocol == unix.RTPROT_KERNEL || dst == b.own || !kernel.Owned(b.network, dst) {
			continue // not ours
		}
		if p, ok := missing[dst]; ok && r.Gw.Equal(kernel.IP(p.gateway)) {
			delete(missing, dst)
			continue
		}
		if err := kernel.IgnoreNotExist(b.nl.RouteDel(r)); err != nil {
			b.log.Error("reconcile: cannot delete stale route", "route", r.String(), "error", err)
			continue
		}
		b.log.Info("reconcile: deleted stale route", "route", r.String())
	}
	for _, p := range missing {
		if !p.failing {
			b.log.Info("reconcile: restoring missing route", "subnet", p.subnet, "gateway", p.gateway)
		}
		b.program(p)
	}
	return nil
}
