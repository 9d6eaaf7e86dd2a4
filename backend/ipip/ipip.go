// Package ipip is flannel's ipip backend: pod packets travel inside IP
// protocol 4 (RFC 2003), the inner IPv4 packet after an outer IPv4 header
// and nothing else, 20 bytes of overhead. Its lease is flanneld's
// ({"PublicIP":...,"BackendType":"ipip"}, no BackendData), and so is its
// option: DirectRouting gives peers whose public IP is on this host's link
// a plain route via that IP (host-gw's), and only the others go through
// the tunnel.
//
// A host gets one of two paths, chosen at start by asking the kernel for
// flanneld's device:
//   - kernel: where the kernel has ipip, flanneld's layout exactly: the
//     device flannel.ipip (local = the interface address, remote any, ttl
//     inherit, nopmtudisc, MTU external - 20, the lease's network address
//     as /32) and per peer `<subnet> via <PublicIP> dev flannel.ipip
//     onlink`; the kernel encapsulates.
//   - userspace: where it has none (the kernel refuses the device kind),
//     the udp backend's pipeline with the IPIP encapsulation (package
//     encap: a raw socket of protocol 4): a TUN named flannel.ipip with
//     the lease's network address as /32 and a route for the whole network,
//     the same packets on the wire as the kernel's device sends, so both
//     kinds of host share one overlay.
package ipip

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/backend/kernel"
	"github.com/flannelu/flannelu/backend/udp"
	"github.com/flannelu/flannelu/encap"
	"github.com/flannelu/flannelu/internal/metrics"
	"github.com/flannelu/flannelu/subnet"
)

// BackendType is the lease's and the network config's Backend.Type.
const BackendType = "ipip"

// DeviceName is flanneld's device, and the userspace path's TUN.
const DeviceName = "flannel.ipip"

// Overhead is the outer IPv4 header.
const Overhead = 20

// Options configure New.
type Options struct {
	Network           netip.Prefix // the IPv4 overlay; ipip carries nothing else
	IPv6Network       netip.Prefix // must be zero: refused with a clear error
	BackendJSON       []byte       // the config's Backend object: DirectRouting
	ReconcileInterval time.Duration
	Logger            *slog.Logger
	Metrics           *metrics.Registry
	// Forwarder is the userspace path's pipeline options (offloads, busy
	// polling, tracing...); Encap, DeviceName and the networks are set
	// here.
	Forwarder udp.Options
}

type config struct {
	DirectRouting bool
}

// path is how a host carries IPIP.
type path int

const (
	kernelPath    path = iota + 1 // the kernel's ipip device
	userspacePath                 // the TUN and a raw socket of protocol 4
)

func (p path) String() string {
	if p == kernelPath {
		return "kernel"
	}
	return "userspace"
}

// Backend is the ipip backend. Create it with New.
type Backend struct {
	ext        *backend.ExternalInterface
	opts       Options
	cfg        config
	log        *slog.Logger
	peerErrors *metrics.Counter

	path   path
	fwd    *udp.Backend // userspace path
	kernel kernelState  // kernel path (device_linux.go)
	// The route keepers: through the tunnel device (kernel path), and
	// DirectRouting's plain routes on the external interface.
	routers []router
	direct  router
	tunnel  router
	onLink  func(netip.Addr) bool // DirectRouting's test of a peer's public IP

	mu sync.Mutex // HandleEvents and the route keepers' decisions
}

var _ backend.Backend = (*Backend)(nil)

// router is what the backend needs of a route keeper (package hostgw's,
// with the device and lease type set).
type router interface {
	Start(context.Context, subnet.Lease) error
	HandleEvents(context.Context, []subnet.Event)
	Run(context.Context) error
}

// New checks the options; the path is chosen by Init.
func New(ext *backend.ExternalInterface, opts Options) (*Backend, error) {
	var cfg config
	if len(opts.BackendJSON) > 0 {
		if err := json.Unmarshal(opts.BackendJSON, &cfg); err != nil {
			return nil, fmt.Errorf("ipip backend config %s: %w", opts.BackendJSON, err)
		}
	}
	switch {
	case opts.IPv6Network.IsValid():
		return nil, errors.New("ipip backend: IP protocol 4 carries IPv4 only; for an IPv6 network use vxlan, host-gw or udp")
	case !opts.Network.IsValid() || !opts.Network.Addr().Is4():
		return nil, fmt.Errorf("ipip backend: network %v is not an IPv4 prefix", opts.Network)
	case !ext.IfaceAddr.IsValid():
		return nil, fmt.Errorf("ipip backend: %s has no IPv4 address", ext.Iface.Name)
	case ext.Iface.MTU-Overhead < 576:
		return nil, fmt.Errorf("ipip backend: MTU %d of %s is too small for ipip mode to work", ext.Iface.MTU, ext.Iface.Name)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Backend{ext: ext, opts: opts, cfg: cfg, log: log.With("backend", BackendType),
		peerErrors: kernel.PeerErrors(opts.Metrics)}, nil
}

// Init chooses the path (the kernel's device where it has one) and
// returns flanneld's lease attributes: the public IP and the type.
func (b *Backend) Init(ctx context.Context) (subnet.LeaseAttrs, error) {
	attrs := subnet.LeaseAttrs{PublicIP: b.ext.ExtAddr, BackendType: BackendType}
	err := b.initKernel()
	switch {
	case err == nil:
		b.path = kernelPath
	case errors.Is(err, errNoIPIP):
		b.path = userspacePath
		fo := b.opts.Forwarder
		fo.Encap, fo.DeviceName, fo.Network, fo.Network6 = encap.IPIP, DeviceName, b.opts.Network, netip.Prefix{}
		fo.BackendJSON, fo.Metrics = nil, b.opts.Metrics
		if fo.Logger == nil {
			fo.Logger = b.log
		}
		if b.fwd, err = udp.New(b.ext, fo); err != nil {
			return attrs, err
		}
	default:
		return attrs, err
	}
	b.log.Info("ipip path chosen", "path", b.path.String(), "why", b.why(), "direct_routing", b.cfg.DirectRouting, "mtu", b.MTU())
	return attrs, nil
}

func (b *Backend) why() string {
	if b.path == kernelPath {
		return "the kernel has ipip: flanneld's flannel.ipip device"
	}
	return "the kernel has no ipip device (" + errNoIPIP.Error() + "): IPIP from a raw socket, as the kernel's device would send it"
}

// MTU is the external MTU less the outer header, on either path.
func (b *Backend) MTU() int { return b.ext.Iface.MTU - Overhead }

// Start configures the path for the own lease and starts the route
// keepers.
func (b *Backend) Start(ctx context.Context, own subnet.Lease) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.path == userspacePath {
		if err := b.fwd.Start(ctx, own); err != nil {
			return err
		}
	} else if err := b.startKernel(own); err != nil {
		return err
	}
	if err := b.newRouters(); err != nil {
		return err
	}
	for _, r := range b.routers {
		if err := r.Start(ctx, own); err != nil {
			return err
		}
	}
	return nil
}

// HandleEvents sends each peer lease where it goes: a lease of another
// type is logged, counted and dropped (a known peer that turned into one
// is removed); with DirectRouting a peer on this host's link to the plain
// routes, any other to the tunnel's routes (kernel path); and every ipip
// peer to the userspace forwarder, which also receives from direct peers
// that do not route directly themselves.
func (b *Backend) HandleEvents(ctx context.Context, events []subnet.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var fwd, direct, tunnel []subnet.Event
	for _, ev := range events {
		if kernel.Foreign(ev, BackendType, b.log, b.peerErrors) {
			ev = subnet.Event{Type: subnet.EventRemoved, Lease: ev.Lease, Key: ev.Key}
		}
		fwd = append(fwd, ev)
		viaDirect := ev.Type != subnet.EventRemoved && b.cfg.DirectRouting && b.onLink != nil && b.onLink(ev.Lease.Attrs.PublicIP)
		gone := subnet.Event{Type: subnet.EventRemoved, Lease: ev.Lease, Key: ev.Key}
		switch {
		case ev.Type == subnet.EventRemoved:
			direct, tunnel = append(direct, ev), append(tunnel, ev)
		case viaDirect:
			direct, tunnel = append(direct, ev), append(tunnel, gone)
		default:
			direct, tunnel = append(direct, gone), append(tunnel, ev)
		}
	}
	if b.fwd != nil {
		b.fwd.HandleEvents(ctx, fwd)
	}
	if b.direct != nil {
		b.direct.HandleEvents(ctx, direct)
	}
	if b.tunnel != nil {
		b.tunnel.HandleEvents(ctx, tunnel)
	}
}

// Run runs the forwarder (userspace path) and the route keepers until
// ctx is done; the first error of one ends them all.
func (b *Backend) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	runs := make([]func(context.Context) error, 0, 3)
	if b.fwd != nil {
		runs = append(runs, b.fwd.Run)
	}
	for _, r := range b.routers {
		runs = append(runs, r.Run)
	}
	var wg sync.WaitGroup
	for _, run := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx); err != nil {
				cancel(err)
			}
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// Path is the path Init chose: "kernel" or "userspace".
func (b *Backend) Path() string { return b.path.String() }

// PeerErrors counts peer leases ignored (another backend type).
func (b *Backend) PeerErrors() uint64 { return b.peerErrors.Value() }
