package main

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

// run is the daemon: config, interface, backend, lease, subnet.env, then
// the lease keeper, the peer watcher and the backend until ctx ends.
func run(ctx context.Context, o *options, log *slog.Logger) (err error) {
	if runtime.GOOS != "linux" {
		return errors.New("flannelu runs on Linux only: its backends program TUN devices, netlink routes and iptables")
	}
	// A signal during start-up is a clean stop, not a failure: the stage
	// says where it came.
	stage := "connecting to the store"
	defer func() {
		if err != nil && ctx.Err() != nil {
			err = &stoppedError{stage: stage}
		}
	}()
	reg := metrics.NewRegistry()
	var health *healthServer
	if o.healthzPort > 0 {
		health = newHealthServer(o, reg, log)
		healthCtx, stopHealth := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); health.run(healthCtx) }()
		defer func() { stopHealth(); <-done }()
	}
	mgr, storeID, closeStore, err := openStore(ctx, o, log)
	if err != nil {
		return err
	}
	defer closeStore()
	ready := newReadiness(mgr)
	if health != nil {
		health.setReady(ready)
	}
	reg.CounterFunc("flannelu_malformed_leases_total",
		"Peer leases skipped because they could not be parsed: an etcd key or value, or a node's podCIDR or flannel annotations.", mgr.MalformedLeases)
	exportStoreHealth(reg, mgr)
	stage = "waiting for the network config"
	cfg, err := waitForConfig(ctx, mgr, log)
	if err != nil {
		return err
	}
	stage = "setting up the backend"
	if err := useNodePublicIP(ctx, mgr, o, log); err != nil {
		return err
	}
	ext, err := lookupExtIface(o, familiesOf(cfg), log)
	if err != nil {
		return err
	}
	logExtIface(log, ext)
	// Nothing of the host's network is touched before this: a flannelu or
	// a flanneld that runs here is taken over from or waited for.
	stage = "waiting for the flannelu or flanneld running on this host"
	ho, err := takeOver(ctx, o, identityOf(o, storeID, cfg, ext), log)
	if err != nil {
		return err
	}
	defer func() { ho.close(err) }()
	removeLeftovers(cfg, ext, log)
	stage = "setting up the backend"
	be, err := newBackend(cfg, ext, o, reg, log, ho.inherit(cfg.BackendType))
	if err != nil {
		return err
	}
	attrs, err := be.Init(ctx)
	if err != nil {
		return fmt.Errorf("backend %s: %w", cfg.BackendType, err)
	}
	prev := previousEnv(o.subnetFile, log)
	stage = "acquiring the subnet lease"
	lease, err := ho.lease(mgr, cfg, attrs, func() (subnet.Lease, error) { return acquireLease(ctx, mgr, cfg, attrs, prev.Subnet.Masked()) })
	if err != nil {
		return fmt.Errorf("acquire subnet lease: %w", err)
	}
	log.Info("subnet lease acquired", "subnet", lease.Subnet, "expires", lease.Expiration)
	stage = "starting the backend"
	if err := be.Start(ctx, lease); err != nil {
		return fmt.Errorf("backend %s: %w", cfg.BackendType, err)
	}
	ruleSet, err := newRules(o, cfg, lease, prev, reg, log)
	if err != nil {
		return err
	}
	keep := keepers{ruleSet}
	envFile := newSubnetFile(o.subnetFile, envFor(cfg, lease, be.MTU(), o.ipMasq), reg, log)
	valid := newValidator(cfg, lease, mgr, be, ext, reg, log)
	filter, err := newPeerFilter(o, cfg, reg, log)
	if err != nil {
		return err
	}
	if filter != nil {
		for _, fam := range filter.families {
			keep = append(keep, fam.r)
		}
	}
	if o.blackholeRoute {
		keep = append(keep, blackholeRoutes(o, cfg, lease, log))
	}
	stage = "running"
	return runLoops(ctx, o, ready, mgr, cfg, lease, be, valid, ruleSet, keep, filter, ho, envFile, log)
}

// newRules returns what sets flanneld's masquerade and forward rules up
// (runLoops) with the tool the network config chooses (nftables with
// "EnableNFTables": true, else iptables), having removed the other tool's,
// and keeps them in place; readiness waits for them. Only nftables mode
// without a usable nft is fatal, as in flanneld; otherwise a failure is
// logged (and the node forwards anyway, as flanneld's does) and retried
// every resync.
func newRules(o *options, cfg *subnet.Config, lease subnet.Lease, prev subnet.Env, reg *metrics.Registry, log *slog.Logger) (rules.Manager, error) {
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

// runLoops runs the lease keeper, the watcher (its events through valid,
// the accepted peers into filter when it is not nil), the set-up of
// ruleSet and then subnet.env (and its retry while it fails), the keepers
// of rules and routes and the backend, whose state ready reports; the
// first fatal error stops them all.
func runLoops(ctx context.Context, o *options, ready *readiness, mgr subnet.Store, cfg *subnet.Config, lease subnet.Lease, be backend.Backend,
	valid *subnet.Validator, ruleSet rules.Manager, keep keepers, filter *peerFilter, ho *handOver, envFile *subnetFile, log *slog.Logger) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// work is all there is but the health server (run's), which a process
	// that handed over keeps serving (--after-handover=wait).
	work, stopWork := context.WithCancelCause(ctx)
	defer stopWork(nil)
	var wg sync.WaitGroup
	goFatalIn := func(ctx context.Context, name string, fn func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				cancel(fmt.Errorf("%s: %w", name, err))
			}
		}()
	}
	goFatal := func(name string, fn func(context.Context) error) { goFatalIn(work, name, fn) }
	goFatal("lease", func(ctx context.Context) error { return mgr.KeepLease(ctx, cfg, lease) })
	// The rules go in before subnet.env, as flanneld does: a pod the CNI
	// plugin starts from it masquerades from its first packet. Both go in
	// beside the backend's start, not before it: a node taken over from
	// flanneld or a predecessor forwards as soon as the backend runs, and
	// its rules, whose check takes most of a second on a loaded host, are
	// in place already.
	goFatal("rules", func(ctx context.Context) error {
		ruleSet.Setup(ctx) //nolint:errcheck // logged; /readyz reports it until a resync succeeds
		ready.set(condRules, "in place", ruleSet.InPlace)
		envFile.write() // a failure is retried by envFile.keep
		ready.set(condSubnetEnv, "written", envFile.Err)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); envFile.keep(ctx) }()
		keep.Run(ctx)
		wg.Wait()
		return nil
	})
	// The backend runs only once it has the peers of the first snapshot:
	// a kernel backend's reconcile would otherwise take the empty peer set
	// of a restart for the truth and delete every peer's entries.
	synced := make(chan struct{})
	running := make(chan struct{}) // closed when the backend runs
	var once sync.Once
	goFatal("watch", func(ctx context.Context) error {
		return mgr.WatchLeases(ctx, func(evs []subnet.Event) {
			// Backends see only valid peers, never this host's lease.
			peers := valid.Filter(evs)
			if filter != nil {
				filter.sync(valid.Accepted())
			}
			if len(peers) > 0 {
				be.HandleEvents(ctx, peers)
			}
			once.Do(func() { close(synced) })
		})
	})
	backendDone := make(chan struct{})
	goFatal("backend", func(ctx context.Context) error {
		defer close(backendDone)
		select {
		case <-synced:
		case <-ctx.Done():
			return nil
		}
		afterFirstSnapshot(ctx, be, log)
		ready.backend.Store(backendRunning)
		defer ready.backend.Store(backendStopped)
		close(running)
		log.Info("backend running", "backend", cfg.BackendType)
		return be.Run(ctx)
	})
	// After the backend forwards: the predecessor leaves, and a successor
	// may come. Leaving returns once the backend has stopped: a successor
	// that opens the device anew (ipip) finds it free.
	wg.Add(1)
	go func() {
		defer wg.Done()
		leave := func() { handedOver(o, cancel, stopWork, log); <-backendDone }
		ho.run(work, running, lease, be, leave, func(err error) { cancel(fmt.Errorf("hand-over: %w", err)) })
	}()
	<-ctx.Done()
	wg.Wait()
	if err := context.Cause(ctx); !errors.Is(err, context.Canceled) && !errors.Is(err, errHandedOver) {
		if errors.Is(err, subnet.ErrHostRemoved) {
			withdrawPeers(be, valid, log)
		}
		return err
	}
	return nil
}

// stoppedError: a signal ended the start-up at stage.
type stoppedError struct{ stage string }

func (e *stoppedError) Error() string { return "stopped by signal while " + e.stage }

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

func newEtcdClient(o *options) (*clientv3.Client, error) {
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
