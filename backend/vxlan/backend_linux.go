package vxlan

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/backend/kernel"
	"github.com/flannelu/flannelu/internal/metrics"
	"github.com/flannelu/flannelu/subnet"
)

// BackendType is the lease BackendType this backend publishes and accepts.
const BackendType = "vxlan"

// Backend is the vxlan backend. Create it with New.
type Backend struct {
	ext      *backend.ExternalInterface
	cfg      Config
	interval time.Duration
	log      *slog.Logger
	nl       *netlink.Handle

	mu    sync.Mutex // guards the vteps' kernel state; HandleEvents and Run share it
	vteps []*vtep    // IPv4 (flannel.<VNI>) first, then IPv6 (flannel-v6.<VNI>)
	// batch writes the entries of many new peers at once (kernel.Batch),
	// in this process's namespace: only when nl is the process's own.
	batch *kernel.Batcher

	peerErrors *metrics.Counter
}

var _ backend.Backend = (*Backend)(nil)

// New validates the options; it does not touch the kernel (Init does).
// Each network given (Network, IPv6Network) gets its device; the external
// interface must have the addresses of those families.
func New(ext *backend.ExternalInterface, opts Options) (*Backend, error) {
	if ext == nil || ext.Iface == nil {
		return nil, errors.New("vxlan: no external interface")
	}
	cfg, err := ParseConfig(opts.BackendJSON)
	if err != nil {
		return nil, err
	}
	b := &Backend{ext: ext, cfg: cfg, interval: opts.ReconcileInterval, log: opts.Logger, nl: opts.Netlink}
	b.peerErrors = kernel.PeerErrors(opts.Metrics)
	if b.interval <= 0 {
		b.interval = kernel.DefaultReconcileInterval
	}
	if b.log == nil {
		b.log = slog.Default()
	}
	b.log = b.log.With("backend", BackendType)
	if b.vteps, err = b.newVTEPs(opts); err != nil {
		return nil, err
	}
	if b.nl == nil {
		if b.nl, err = netlink.NewHandle(); err != nil {
			return nil, fmt.Errorf("vxlan: netlink: %w", err)
		}
		b.batch = kernel.NewBatcher(kernel.NewBatch)
	}
	return b, nil
}

// newVTEPs checks each enabled family's network and addresses and makes
// its half of the backend.
func (b *Backend) newVTEPs(opts Options) ([]*vtep, error) {
	var vteps []*vtep
	for _, f := range []struct {
		fam              backend.Family
		network          netip.Prefix
		local, public    netip.Addr
		name, publicFlag string
	}{
		{backend.IPv4, opts.Network, b.ext.IfaceAddr, b.ext.ExtAddr, DeviceName(b.cfg.VNI), "--public-ip"},
		{backend.IPv6, opts.IPv6Network, b.ext.IfaceV6Addr, b.ext.ExtV6Addr, DeviceNameV6(b.cfg.VNI), "--public-ipv6"},
	} {
		if !f.network.IsValid() {
			continue
		}
		if !f.fam.Contains(f.network.Addr()) {
			return nil, fmt.Errorf("vxlan: network %v is not an %s prefix", f.network, f.fam)
		}
		if !f.fam.Contains(f.local) || !f.fam.Contains(f.public) {
			return nil, fmt.Errorf("vxlan: the %s network %v needs an %s address on %s and a public one (%s): have %v and %v",
				f.fam, f.network, f.fam, b.ext.Iface.Name, f.publicFlag, f.local, f.public)
		}
		vteps = append(vteps, &vtep{
			b: b, fam: f.fam, name: f.name, network: f.network.Masked(), local: f.local, public: f.public,
			log: b.log.With("device", f.name), peers: make(map[netip.Prefix]peer),
		})
	}
	if len(vteps) == 0 {
		return nil, errors.New("vxlan: neither an IPv4 nor an IPv6 network")
	}
	return vteps, nil
}

// Config returns the parsed backend configuration.
func (b *Backend) Config() Config { return b.cfg }

// MTU is the overlay MTU for subnet.env and the device: the underlay MTU
// (Backend.MTU, as flanneld v0.28 reads it, else the external
// interface's) minus Overhead, as flanneld writes it (also in dual stack,
// where flannel-v6.<VNI> has 20 bytes less and the kernel tells IPv6 pods
// so with packet-too-big); for an IPv6-only network minus OverheadV6, so
// that no pod packet needs that round trip.
func (b *Backend) MTU() int {
	underlay := b.ext.Iface.MTU
	if b.cfg.MTU != 0 {
		underlay = b.cfg.MTU
	}
	if b.vteps[0].fam.Is6() {
		return underlay - OverheadV6
	}
	return underlay - Overhead
}

// PeerErrors counts peer leases that could not be programmed or were
// ignored (foreign backend type, malformed BackendData, bad subnet), per
// family.
func (b *Backend) PeerErrors() uint64 { return b.peerErrors.Value() }

// Init creates flannel.<VNI> and, for IPv6, flannel-v6.<VNI>, or reuses
// compatible existing ones so their MACs (published in the lease) stay
// stable across restarts, and returns the lease attributes: PublicIP and
// BackendData for IPv4, PublicIPv6 and BackendV6Data for IPv6. A dual-stack
// lease always carries BackendV6Data: a flanneld with EnableIPv6 ignores a
// peer's whole lease without it.
func (b *Backend) Init(ctx context.Context) (subnet.LeaseAttrs, error) {
	attrs := subnet.LeaseAttrs{BackendType: BackendType}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, v := range b.vteps {
		dev, err := v.ensureDevice()
		if err != nil {
			return subnet.LeaseAttrs{}, err
		}
		v.dev = dev
		data, err := json.Marshal(LeaseData{VNI: b.cfg.VNI, VtepMAC: dev.Attrs().HardwareAddr})
		if err != nil {
			return subnet.LeaseAttrs{}, fmt.Errorf("vxlan: lease data: %w", err)
		}
		if v.fam.Is6() {
			attrs.PublicIPv6, attrs.BackendV6Data = v.public, data
		} else {
			attrs.PublicIP, attrs.BackendData = v.public, data
		}
	}
	return attrs, nil
}

// Start puts each family's lease network address on its device (/32 on
// flannel.<VNI>, /128 on flannel-v6.<VNI>) and brings the devices up. A
// correct existing address is kept; other addresses of the family on the
// device (a previous lease) are removed, IPv6 link-local ones excepted.
func (b *Backend) Start(ctx context.Context, own subnet.Lease) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, v := range b.vteps {
		if err := v.start(v.fam.Subnet(own)); err != nil {
			return err
		}
	}
	return nil
}

// Reconcile runs one reconcile pass now (backend.Reconciler): the routes,
// neighbours and fdb entries of peers it was not given go, missing ones
// are added.
func (b *Backend) Reconcile(context.Context) error { return kernel.Locked(&b.mu, b.reconcile) }

// Run reconciles every ReconcileInterval until ctx is done and returns
// nil, leaving the kernel state in place. One pass covers both families.
func (b *Backend) Run(ctx context.Context) error {
	return kernel.Reconcile(ctx, b.interval, b.log, b.Reconcile)
}

// reconcile runs one pass over every family. Callers hold b.mu.
func (b *Backend) reconcile() error { return kernel.Each(b.vteps, (*vtep).reconcile) }
