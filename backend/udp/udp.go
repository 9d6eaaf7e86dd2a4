// Package udp is flannelu's userspace backend: pod packets read from a TUN
// device are sent to the peer host inside UDP (port 8285 by default), the
// datagram's payload being the raw inner IP packet, exactly flanneld's
// wire format. The two directions are kept apart: inside (TUN to UDP) in
// inside.go, outside (UDP to TUN) in outside.go. Both carry IPv6 too,
// which flanneld's udp backend never had, with the same code: the inner
// family is a value (inner.go), an index of each half's per-family state.
//
// The same pipeline carries flannel's ipip encapsulation where the kernel
// has no ipip device (Options.Encap, package backend/ipip): only the
// socket and its header differ (package encap), and the inner TTL is left
// alone, as the kernel's tunnel leaves it.
package udp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/encap"
	"github.com/flannelu/flannelu/internal/drop"
	"github.com/flannelu/flannelu/internal/metrics"
	"github.com/flannelu/flannelu/internal/trace"
	"github.com/flannelu/flannelu/routetable"
	"github.com/flannelu/flannelu/subnet"
	"github.com/flannelu/flannelu/tun"
)

// DefaultPort is flanneld's udp backend port.
const DefaultPort = 8285

// encapOverhead is the outer IPv4 and UDP headers: the overlay MTU is the
// external MTU less this, as in flanneld.
const encapOverhead = 20 + 8

// encapOverhead6 is the outer IPv6 and UDP headers, over an IPv6 underlay.
const encapOverhead6 = 40 + 8

// Options configure the backend.
type Options struct {
	// Encap is the wire format: encap.UDP (the udp backend, the default)
	// or encap.IPIP (the ipip backend's userspace path: IPv4 only, one
	// worker, BackendJSON not read, leases of type "ipip").
	Encap       encap.Encapsulation
	Network     netip.Prefix // the whole IPv4 overlay, routed into the TUN; zero for IPv6-only
	Network6    netip.Prefix // the whole IPv6 overlay (IPv6Network), routed into the TUN; zero for IPv4-only
	BackendJSON []byte       // the config's Backend object: {"Type":"udp","Port":8285}
	DeviceName  string       // default flannel0 (the ipip backend names it flannel.ipip)
	Workers     int          // forwarding workers (TUN queues and sockets); 0: automatic
	// Offload reads and writes TCP/UDP super-packets on the TUN
	// (IFF_VNET_HDR), splits them for the wire and sends and receives
	// runs of datagrams with UDP GSO/GRO. Where the kernel refuses, the
	// backend falls back to one packet per read and datagram.
	Offload   bool
	Trace     bool      // one line per packet, rate-limited
	TracePcap string    // also a pcap of traced packets
	TraceRate int       // trace lines per second
	TraceOut  io.Writer // where trace lines go; default stderr
	Logger    *slog.Logger
	// Metrics receives the forwarder's counters and those of its TUN
	// device, sockets and tracer; nil exports them nowhere.
	Metrics *metrics.Registry
	// ForeignSources also accepts, from a peer, inner sources outside
	// Network or Network6 (by default a peer's packets must come from its own
	// subnet; see sourceOK). Sources inside Network that are not the
	// sender's are refused either way.
	ForeignSources bool
	// BusyPoll is how long after a packet each worker checks its TUN
	// queue and sockets without sleeping before it sleeps (poller's
	// SetBusyPoll: CPU time for the wake-up of a sleeping thread); 0, the
	// default, never.
	BusyPoll time.Duration
	// Inherit, when set, is a running predecessor's device and sockets
	// (its HandOff): Start takes them over instead of opening its own, and
	// Workers and Offload are theirs.
	Inherit *Inherited
}

type config struct {
	Type string
	Port int
}

// Backend is the udp backend. Its data path is in the workers; the route
// table is the only state they share with the lease watcher.
type Backend struct {
	ext    *backend.ExternalInterface
	opts   Options
	port   int
	mtu    int // largest IPv4 inner packet
	mtu6   int // largest IPv6 inner packet: less when the underlay is IPv6
	log    *slog.Logger
	routes *routetable.Table
	drops  drop.Counters
	kdrops kernelDrops

	dev     *tun.Device
	ifindex int  // the TUN's interface index
	vnet    bool // the TUN was opened with IFF_VNET_HDR (offload mode)
	// kept says that another process uses the device and sockets after
	// Run (KeepDevice): they are closed here, not retired.
	kept   atomic.Bool
	conns  []*encap.Conn // IPv4 underlay, one per worker; none on an IPv6-only host
	conns6 []*encap.Conn // IPv6 underlay, one per worker, when the network carries IPv6
	tracer *trace.Tracer
	pcap   *os.File // the tracer's pcap file, closed after the tracer
	own    netip.Prefix
	own6   netip.Prefix

	mu    sync.Mutex
	peers map[netip.Prefix]routetable.Peer
	// touched holds, for each peer changed since the last snapshot, its
	// value in that snapshot (events.go).
	touched      map[netip.Prefix]routetable.Peer
	publishTimer *time.Timer   // a paced snapshot to come
	lastPublish  time.Time     // when the last snapshot was published
	lastBuild    time.Duration // how long building it took
}

// New checks the options; nothing is created before Start.
func New(ext *backend.ExternalInterface, opts Options) (*Backend, error) {
	cfg := config{Port: DefaultPort}
	if opts.Encap == encap.IPIP {
		// Protocol 4 has no port; raw sockets cannot share the packets
		// between workers (each gets a copy of every one).
		cfg.Port, opts.Workers, opts.BackendJSON = 0, 1, nil
		if opts.Network6.IsValid() {
			return nil, errors.New("ipip backend: IP protocol 4 carries IPv4 only; use udp, vxlan or host-gw for IPv6")
		}
	}
	if len(opts.BackendJSON) > 0 {
		if err := json.Unmarshal(opts.BackendJSON, &cfg); err != nil {
			return nil, fmt.Errorf("udp backend config %s: %w", opts.BackendJSON, err)
		}
	}
	if (cfg.Port < 1 && opts.Encap != encap.IPIP) || cfg.Port > 65535 {
		return nil, fmt.Errorf("udp backend config: Port %d: must be between 1 and 65535", cfg.Port)
	}
	if err := checkNetworks(opts); err != nil {
		return nil, err
	}
	if opts.DeviceName == "" {
		opts.DeviceName = tun.DefaultName
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	mtu, mtu6, err := overlayMTUs(ext, opts)
	if err != nil {
		return nil, err
	}
	b := &Backend{
		ext: ext, opts: opts, port: cfg.Port, mtu: mtu, mtu6: mtu6, log: opts.Logger,
		routes: routetable.New(), peers: map[netip.Prefix]routetable.Peer{}, touched: map[netip.Prefix]routetable.Peer{},
	}
	b.drops.Register(opts.Metrics)
	opts.Metrics.GaugeFunc("flannelu_udp_route_table_peers", "Peers in the udp backend's route table (the snapshot the forwarder reads).",
		func() float64 { return float64(b.routes.Snapshot().Len()) })
	b.kdrops.register(opts.Metrics)
	return b, nil
}

// Init returns flanneld's udp lease attributes: the public IP and nothing
// else (flanneld's udp backend writes no BackendType), and the public IPv6
// address when the network carries IPv6 (ExtV6Addr is set only then).
func (b *Backend) Init(context.Context) (subnet.LeaseAttrs, error) {
	return subnet.LeaseAttrs{PublicIP: b.ext.ExtAddr, PublicIPv6: b.ext.ExtV6Addr}, nil
}

// MTU is the TUN's MTU: external MTU - 28 (- 48 on an IPv6-only host).
// IPv6 inner packets have their own, on the IPv6 route (mtu6).
func (b *Backend) MTU() int {
	if b.opts.Network.IsValid() {
		return b.mtu
	}
	return b.mtu6
}

// Start opens the TUN and the sockets, or takes over the inherited ones,
// and configures the device for the host's own lease.
func (b *Backend) Start(_ context.Context, own subnet.Lease) (err error) {
	b.own, b.own6 = own.Subnet, own.IPv6Subnet
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	local := netip.AddrPortFrom(b.ext.IfaceAddr, uint16(b.port))
	if b.opts.Inherit != nil {
		if err := b.adopt(b.opts.Inherit); err != nil {
			return fmt.Errorf("take over the predecessor's TUN and sockets: %w", err)
		}
		if len(b.conns) > 0 {
			local = b.conns[0].LocalAddr()
		}
	} else if err := b.openDevice(b.workerCount()); err != nil {
		return err
	}
	if b.ifindex, err = configureDevice(b.layout()); err != nil {
		return err
	}
	if err := b.listen(local); err != nil {
		return err
	}
	b.kdrops.set(b.dev.Name(), slices.Concat(b.conns, b.conns6))
	workers := len(b.dev.Queues())
	if b.opts.Trace {
		if b.tracer, err = b.newTracer(); err != nil {
			return err
		}
	}
	gso, gro := b.firstConn().Offloads()
	b.log.Info(strings.ToLower(b.opts.Encap.String())+" forwarder ready", "device", b.dev.Name(), "mtu", b.MTU(), "listen", b.listening(), "workers", workers,
		"tun_offloads", b.dev.Offloads(), "udp_gso", gso, "udp_gro", gro)
	return nil
}

// openTUN opens the device with offloads when asked, else (or when the
// kernel refuses IFF_VNET_HDR) one packet per read.
func (b *Backend) openTUN(queues int) error {
	var err error
	if b.opts.Offload {
		b.dev, err = tun.Open(tun.Config{Name: b.opts.DeviceName, Queues: queues, VnetHdr: true, Metrics: b.opts.Metrics})
		if err == nil {
			b.vnet = true
			return nil
		}
		b.log.Warn("TUN offloads refused; forwarding one packet at a time", "error", err)
	}
	if b.dev, err = tun.Open(tun.Config{Name: b.opts.DeviceName, Queues: queues, Metrics: b.opts.Metrics}); err != nil {
		return fmt.Errorf("open TUN %s: %w", b.opts.DeviceName, err)
	}
	return nil
}

func (b *Backend) newTracer() (*trace.Tracer, error) {
	out := b.opts.TraceOut
	if out == nil {
		out = os.Stderr
	}
	topts := trace.Options{Out: out, Rate: b.opts.TraceRate, Metrics: b.opts.Metrics}
	if b.opts.TracePcap != "" {
		f, err := os.Create(b.opts.TracePcap)
		if err != nil {
			return nil, fmt.Errorf("trace pcap: %w", err)
		}
		b.pcap, topts.Pcap = f, f
	}
	return trace.New(topts)
}

// workerCount is the configured worker count; automatic is one, because
// on the 2-core benchmark machine a second worker did not pay: one TCP
// stream went from 15.1 to 14.0 Gbit/s, four streams from 17.3 to 14.1,
// latency unchanged (BENCHMARKS.md).
func (b *Backend) workerCount() int {
	if b.dev != nil && b.opts.Inherit != nil {
		return len(b.dev.Queues())
	}
	if b.opts.Workers > 0 {
		return b.opts.Workers
	}
	return 1
}

// Log messages (info) when Run starts and stops forwarding: the edges of a
// restart's gap.
const (
	Forwarding        = "forwarding"
	StoppedForwarding = "stopped forwarding"
)

// Run forwards until ctx is done, then stops the workers (stopWorkers),
// retires the device and sockets unless a successor took them over
// (KeepDevice) and closes them. Each worker owns one TUN queue and its
// sockets (IPv4, IPv6) and runs both directions from one goroutine
// (loop_linux.go).
func (b *Backend) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(b.dev.Queues()))
	for i, q := range b.dev.Queues() {
		w := newWorker(b, q, connAt(b.conns, i), connAt(b.conns6, i))
		wg.Add(1)
		go func() { defer wg.Done(); errs <- w.run(b.opts.BusyPoll) }()
	}
	b.log.Info(Forwarding, "workers", len(b.dev.Queues()))
	defer b.log.Info(StoppedForwarding)
	var err error
	select {
	case <-ctx.Done():
	case err = <-errs:
	}
	b.stopWorkers(&wg)
	if !b.kept.Load() {
		b.retire()
	}
	b.close()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// stopWorkers stops the workers' reads and waits until each has returned:
// a worker finishes the turn it is in, forwarding what it read, and reads
// no more, so that nothing read is lost when the device and sockets are
// closed. What is still queued in the kernel stays there for a successor
// that shares these queues and sockets (a hand-over): its own loop then
// reads it all.
func (b *Backend) stopWorkers(wg *sync.WaitGroup) {
	if err := b.dev.StopReads(); err != nil {
		// Closing wakes the loops too, losing at most what they hold.
		b.log.Warn("could not stop the workers' reads; closing under them", "error", err)
		b.dev.Close()
	}
	wg.Wait()
}

func (b *Backend) close() {
	if b.dev != nil {
		b.dev.Close()
	}
	for _, c := range slices.Concat(b.conns, b.conns6) {
		c.Close()
	}
	if b.tracer != nil {
		b.tracer.Close() // flushes into the pcap file, so it is closed after
	}
	if b.pcap != nil {
		b.pcap.Close()
	}
}

// isClosed reports whether err only says that Run closed the device or
// socket under a worker, or stopped its reads (stopWorkers).
func isClosed(err error) bool {
	return errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded)
}
