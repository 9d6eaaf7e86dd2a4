package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/internal/metrics"
	"github.com/flannelu/flannelu/internal/outage"
	"github.com/flannelu/flannelu/internal/rules"
	"github.com/flannelu/flannelu/subnet"
)

// Run is the daemon: config, interface, backend, lease, subnet.env, then
// the lease keeper, the peer watcher and the backend until ctx ends. A
// signal (ctx ending) during start-up returns a *StoppedError.
func Run(ctx context.Context, o *Options, log *slog.Logger) (err error) {
	if runtime.GOOS != "linux" {
		return errors.New("flannelu runs on Linux only: its backends program TUN devices, netlink routes and iptables")
	}
	n := &node{o: o, log: log, reg: metrics.NewRegistry(), stage: "connecting to the store"}
	defer func() {
		if err != nil && ctx.Err() != nil {
			err = &StoppedError{Stage: n.stage}
		}
	}()
	defer n.serveHealth(ctx)()
	closeStore, err := n.connect(ctx)
	if err != nil {
		return err
	}
	defer closeStore()
	if err := n.configure(ctx); err != nil {
		return err
	}
	// Nothing of the host's network is touched before this: a flannelu or
	// a flanneld that runs here is taken over from or waited for.
	n.stage = "waiting for the flannelu or flanneld running on this host"
	if n.ho, err = takeOver(ctx, o, identityOf(o, n.storeID, n.cfg, n.ext), udpListenAddr(n.cfg, n.ext), log); err != nil {
		return err
	}
	defer func() { n.ho.close(err) }()
	if err := n.startBackend(ctx); err != nil {
		return err
	}
	if err := n.prepareLoops(); err != nil {
		return err
	}
	n.stage = "running"
	return n.runLoops(ctx)
}

// node is one run of the daemon: what each stage of Run sets up, read by
// the stages after it and by the loops that run until the end.
type node struct {
	o     *Options
	log   *slog.Logger
	reg   *metrics.Registry
	stage string // what start-up is doing, for a StoppedError

	health  *healthServer // nil without --healthz-port
	store   subnet.Store
	storeID string // the store's name in a hand-over
	ready   *readiness
	cfg     *subnet.Config
	ext     *backend.ExternalInterface
	ho      *handOver
	be      backend.Backend
	prev    subnet.Env // the last subnet.env, zero when none
	lease   subnet.Lease

	rules  rules.Manager
	keep   keepers
	env    *subnetFile
	valid  *subnet.Validator
	filter *peerFilter // nil without --iptables-peer-filter
}

// serveHealth starts the health server (--healthz-port) and returns what
// stops it.
func (n *node) serveHealth(ctx context.Context) (stop func()) {
	if n.o.healthzPort <= 0 {
		return func() {}
	}
	n.health = newHealthServer(n.o, n.reg, n.log)
	healthCtx, stopHealth := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); n.health.run(healthCtx) }()
	return func() { stopHealth(); <-done }
}

// connect opens the store, hands /readyz its readiness and exports the
// store's health; closeStore releases it.
func (n *node) connect(ctx context.Context) (closeStore func(), err error) {
	n.store, n.storeID, closeStore, err = openStore(ctx, n.o, n.log)
	if err != nil {
		return nil, err
	}
	n.ready = newReadiness(n.store)
	if n.health != nil {
		n.health.setReady(n.ready)
	}
	n.reg.CounterFunc("flannelu_malformed_leases_total",
		"Peer leases skipped because they could not be parsed: an etcd key or value, or a node's podCIDR or flannel annotations.", n.store.MalformedLeases)
	exportStoreHealth(n.reg, n.store)
	return closeStore, nil
}

// configure waits for the network config, then chooses the underlay
// interface (in Kubernetes mode, after the node's public-ip annotation).
func (n *node) configure(ctx context.Context) (err error) {
	n.stage = "waiting for the network config"
	if n.cfg, err = waitForConfig(ctx, n.store, n.log); err != nil {
		return err
	}
	n.stage = "setting up the backend"
	if err := useNodePublicIP(ctx, n.store, n.o, n.log); err != nil {
		return err
	}
	if n.ext, err = lookupExtIface(n.o, familiesOf(n.cfg), n.log); err != nil {
		return err
	}
	logExtIface(n.log, n.ext)
	return nil
}

// startBackend removes what another backend left, sets the backend up,
// acquires the lease (or keeps the predecessor's) and starts the backend.
func (n *node) startBackend(ctx context.Context) (err error) {
	n.prev = previousEnv(n.o.subnetFile, n.log)
	removeLeftovers(n.cfg, n.ext, n.prev, n.log)
	n.stage = "setting up the backend"
	if n.be, err = newBackend(n.cfg, n.ext, n.o, n.reg, n.log, n.ho.inherit(n.cfg.BackendType)); err != nil {
		return err
	}
	attrs, err := n.be.Init(ctx)
	if err != nil {
		return fmt.Errorf("backend %s: %w", n.cfg.BackendType, err)
	}
	n.stage = "acquiring the subnet lease"
	n.lease, err = n.ho.lease(n.store, n.cfg, attrs, func() (subnet.Lease, error) {
		return acquireLease(ctx, n.store, n.cfg, attrs, n.prev.Subnet.Masked())
	})
	if err != nil {
		return fmt.Errorf("acquire subnet lease: %w", err)
	}
	n.log.Info("subnet lease acquired", "subnet", n.lease.Subnet, "expires", n.lease.Expiration)
	n.stage = "starting the backend"
	if err := n.be.Start(ctx, n.lease); err != nil {
		return fmt.Errorf("backend %s: %w", n.cfg.BackendType, err)
	}
	return nil
}

// prepareLoops builds what the loops keep: the rules, subnet.env, the
// validator, the peer filter and the blackhole routes.
func (n *node) prepareLoops() (err error) {
	if n.rules, err = newRules(n.o, n.cfg, n.lease, n.prev, n.reg, n.log); err != nil {
		return err
	}
	n.keep = keepers{n.rules}
	n.env = newSubnetFile(n.o.subnetFile, envFor(n.cfg, n.lease, n.be.MTU(), n.o.ipMasq), n.reg, n.log)
	n.valid = newValidator(n.cfg, n.lease, n.store, n.be, n.ext, n.reg, n.log)
	if n.filter, err = newPeerFilter(n.o, n.cfg, n.reg, n.log); err != nil {
		return err
	}
	if n.filter != nil {
		for _, fam := range n.filter.families {
			n.keep = append(n.keep, fam.r)
		}
	}
	if n.o.blackholeRoute {
		n.keep = append(n.keep, blackholeRoutes(n.o, n.cfg, n.lease, n.log))
	}
	return nil
}

// newRules returns what sets flanneld's masquerade and forward rules up
// (runLoops) with the tool the network config chooses (nftables with
// "EnableNFTables": true, else iptables), having removed the other tool's,
// and keeps them in place; readiness waits for them. Only nftables mode
// without a usable nft is fatal, as in flanneld; otherwise a failure is
// logged (and the node forwards anyway, as flanneld's does) and retried
// every resync.
func newRules(o *Options, cfg *subnet.Config, lease subnet.Lease, prev subnet.Env, reg *metrics.Registry, log *slog.Logger) (rules.Manager, error) {
	opts := rules.Options{
		NFTables:    cfg.EnableNFTables,
		Masq:        o.ipMasq,
		Forward:     o.iptablesForwardRules,
		RandomFully: !o.ipMasqRandomFullyDisable,
		Resync:      time.Duration(o.iptablesResync) * time.Second,
		Logger:      log,
		Metrics:     reg,
	}
	if cfg.EnableIPv4 {
		opts.IPv4 = rules.Family{Network: cfg.Network, Subnet: lease.Subnet, PrevNetwork: prev.Network, PrevSubnet: prev.Subnet}
	}
	if cfg.EnableIPv6 {
		opts.IPv6 = rules.Family{Network: cfg.IPv6Network, Subnet: lease.IPv6Subnet, PrevNetwork: prev.IPv6Network, PrevSubnet: prev.IPv6Subnet}
	}
	return rules.New(opts)
}

// keepers keep kernel state in place until ctx ends: the rules, the peer
// filter's runners, the blackhole routes.
type keepers []interface{ Run(context.Context) }

// Run runs every keeper until ctx ends.
func (k keepers) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, r := range k {
		wg.Add(1)
		go func() { defer wg.Done(); r.Run(ctx) }()
	}
	wg.Wait()
}

// logExtIface logs the underlay the backend uses, each family's addresses
// when it has them.
func logExtIface(log *slog.Logger, ext *backend.ExternalInterface) {
	attrs := []any{"iface", ext.Iface.Name, "mtu", ext.Iface.MTU}
	if ext.IfaceAddr.IsValid() {
		attrs = append(attrs, "addr", ext.IfaceAddr, "public_ip", ext.ExtAddr)
	}
	if ext.IfaceV6Addr.IsValid() {
		attrs = append(attrs, "addr_v6", ext.IfaceV6Addr, "public_ipv6", ext.ExtV6Addr)
	}
	log.Info("using interface", attrs...)
}

// StoppedError says a signal ended the start-up, and at which stage.
type StoppedError struct{ Stage string }

func (e *StoppedError) Error() string { return "stopped by signal while " + e.Stage }

// waitForConfig polls for the network config as flanneld does: a missing
// or invalid config is read again every second and logged when the reason
// changes, else once a minute (not every second: the value may be large).
// An unreachable store is logged by the store itself.
func waitForConfig(ctx context.Context, mgr subnet.Store, log *slog.Logger) (cfg *subnet.Config, err error) {
	var said string
	var saidAt time.Time
	err = everySecond(ctx, func() bool {
		var getErr error
		if cfg, getErr = mgr.GetConfig(ctx); getErr == nil || ctx.Err() != nil {
			return getErr == nil
		}
		if msg := getErr.Error(); !errors.Is(getErr, subnet.ErrUnavailable) && (msg != said || time.Since(saidAt) >= outage.DefaultRepeat) {
			log.Error("cannot use the network config, retrying every second", "error", getErr)
			said, saidAt = msg, time.Now()
		}
		return false
	})
	if err != nil {
		return nil, err
	}
	log.Info("network config", "network", cfg.Network, "subnet_len", cfg.SubnetLen, "backend", cfg.BackendType)
	return cfg, nil
}

// acquireLease asks the store for this host's lease until it answers: an
// unreachable store at start-up is waited for (and logged by the store),
// any other error is fatal.
func acquireLease(ctx context.Context, mgr subnet.Store, cfg *subnet.Config, attrs subnet.LeaseAttrs, prev netip.Prefix) (lease subnet.Lease, err error) {
	if werr := everySecond(ctx, func() bool {
		lease, err = mgr.AcquireLease(ctx, cfg, attrs, prev)
		return !errors.Is(err, subnet.ErrUnavailable)
	}); werr != nil {
		return subnet.Lease{}, werr
	}
	return lease, err
}

// everySecond calls try at once and then every second until it reports
// done; it returns ctx's error if ctx ends first.
func everySecond(ctx context.Context, try func() (done bool)) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for !try() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// previousEnv is the last subnet.env (zero when there is none): the lease
// manager tries its subnet before a random one, and the masquerade rules
// built for it are recycled when the subnet changed.
func previousEnv(path string, log *slog.Logger) subnet.Env {
	env, err := subnet.ReadEnv(path)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			log.Warn("ignoring previous subnet file", "path", path, "error", err)
		}
		return subnet.Env{}
	}
	return env
}

func envFor(cfg *subnet.Config, l subnet.Lease, mtu int, ipMasq bool) subnet.Env {
	e := subnet.Env{MTU: mtu, IPMasq: ipMasq}
	if cfg.EnableIPv4 {
		e.Network, e.Subnet = cfg.Network, l.Subnet
	}
	if cfg.EnableIPv6 {
		e.IPv6Network, e.IPv6Subnet = cfg.IPv6Network, l.IPv6Subnet
	}
	return e
}

func newEtcdClient(o *Options) (*clientv3.Client, error) {
	cfg := clientv3.Config{
		Endpoints:   strings.Split(o.etcdEndpoints, ","),
		DialTimeout: 5 * time.Second,
		Username:    o.etcdUsername,
		Password:    o.etcdPassword,
		Logger:      zap.NewNop(),
	}
	if o.etcdCAFile != "" || o.etcdCertfile != "" {
		tlsInfo := transport.TLSInfo{CertFile: o.etcdCertfile, KeyFile: o.etcdKeyfile, TrustedCAFile: o.etcdCAFile}
		tlsCfg, err := tlsInfo.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd TLS: %w", err)
		}
		cfg.TLS = tlsCfg
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd client for %s: %w", o.etcdEndpoints, err)
	}
	return cli, nil
}
