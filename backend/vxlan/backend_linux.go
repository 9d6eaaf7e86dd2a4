package vxlan

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/backend/kernel"
	"github.com/flannelu/flannelu/metrics"
	"github.com/flannelu/flannelu/subnet"
)

// BackendType is the lease BackendType this backend publishes and accepts.
const BackendType = "vxlan"

// Backend is the vxlan backend. Create it with New.
type Backend struct {
	ext      *backend.ExternalInterface
	cfg      Config
	network  netip.Prefix
	interval time.Duration
	log      *slog.Logger
	nl       *netlink.Handle

	mu    sync.Mutex // guards everything below; HandleEvents and Run share it
	dev   netlink.Link
	own   netip.Prefix
	peers map[netip.Prefix]peer // desired state, by peer subnet

	peerErrors *metrics.Counter
}

var _ backend.Backend = (*Backend)(nil)

// peer is the desired kernel state for one remote lease.
type peer struct {
	subnet netip.Prefix
	public netip.Addr
	mac    net.HardwareAddr
	direct bool // DirectRouting and on our link: plain route, no vxlan entries
}

// New validates the options; it does not touch the kernel (Init does).
func New(ext *backend.ExternalInterface, opts Options) (*Backend, error) {
	if ext == nil || ext.Iface == nil {
		return nil, errors.New("vxlan: no external interface")
	}
	if !ext.IfaceAddr.Is4() || !ext.ExtAddr.Is4() {
		return nil, fmt.Errorf("vxlan: external addresses %v / %v must be IPv4", ext.IfaceAddr, ext.ExtAddr)
	}
	if !opts.Network.IsValid() || !opts.Network.Addr().Is4() {
		return nil, fmt.Errorf("vxlan: Network %v is not an IPv4 prefix", opts.Network)
	}
	cfg, err := ParseConfig(opts.BackendJSON)
	if err != nil {
		return nil, err
	}
	b := &Backend{
		ext:      ext,
		cfg:      cfg,
		network:  opts.Network.Masked(),
		interval: opts.ReconcileInterval,
		log:      opts.Logger,
		nl:       opts.Netlink,
		peers:    make(map[netip.Prefix]peer),
	}
	b.peerErrors = kernel.PeerErrors(opts.Metrics)
	if b.interval <= 0 {
		b.interval = kernel.DefaultReconcileInterval
	}
	if b.log == nil {
		b.log = slog.Default()
	}
	b.log = b.log.With("backend", BackendType, "device", DeviceName(cfg.VNI))
	if b.nl == nil {
		if b.nl, err = netlink.NewHandle(); err != nil {
			return nil, fmt.Errorf("vxlan: netlink: %w", err)
		}
	}
	return b, nil
}

// Config returns the parsed backend configuration.
func (b *Backend) Config() Config { return b.cfg }

// MTU is the configured MTU, else the external MTU minus Overhead.
func (b *Backend) MTU() int {
	if b.cfg.MTU != 0 {
		return b.cfg.MTU
	}
	return b.ext.Iface.MTU - Overhead
}

// PeerErrors counts peer leases that could not be programmed or were
// ignored (foreign backend type, malformed BackendData, bad subnet).
func (b *Backend) PeerErrors() uint64 { return b.peerErrors.Value() }

// Init creates flannel.<VNI>, or reuses a compatible existing one so its
// MAC (published in the lease) stays stable across restarts, and returns
// the lease attributes.
func (b *Backend) Init(ctx context.Context) (subnet.LeaseAttrs, error) {
	dev, err := b.ensureDevice()
	if err != nil {
		return subnet.LeaseAttrs{}, err
	}
	b.mu.Lock()
	b.dev = dev
	b.mu.Unlock()
	data, err := json.Marshal(LeaseData{VNI: b.cfg.VNI, VtepMAC: dev.Attrs().HardwareAddr})
	if err != nil {
		return subnet.LeaseAttrs{}, fmt.Errorf("vxlan: lease data: %w", err)
	}
	return subnet.LeaseAttrs{PublicIP: b.ext.ExtAddr, BackendType: BackendType, BackendData: data}, nil
}

// Start puts the lease's network address /32 on the device and brings it
// up. A correct existing address is kept; other IPv4 addresses on the
// device (a previous lease) are removed.
func (b *Backend) Start(ctx context.Context, own subnet.Lease) error {
	if !own.Subnet.Addr().Is4() || !b.network.Contains(own.Subnet.Addr()) {
		return fmt.Errorf("vxlan: own lease %v is not inside network %v", own.Subnet, b.network)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dev == nil {
		return errors.New("vxlan: Start before Init")
	}
	b.own = own.Subnet.Masked()
	if err := b.ensureAddress(); err != nil {
		return err
	}
	if err := b.nl.LinkSetUp(b.dev); err != nil {
		return fmt.Errorf("vxlan: set %s up: %w", b.dev.Attrs().Name, err)
	}
	return nil
}

// Run reconciles every ReconcileInterval until ctx is done and returns
// nil, leaving the kernel state in place.
func (b *Backend) Run(ctx context.Context) error {
	return kernel.Reconcile(ctx, b.interval, b.log, func(context.Context) error {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.reconcile()
	})
}
