package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/subnet"
)

// run is the daemon: config, interface, backend, lease, subnet.env, then
// the lease keeper, the peer watcher and the backend until ctx ends.
func run(ctx context.Context, o *options, log *slog.Logger) error {
	cli, err := newEtcdClient(o)
	if err != nil {
		return err
	}
	defer cli.Close()
	mgr := subnet.NewManager(cli, subnet.Options{
		Prefix:      o.etcdPrefix,
		LeaseTTL:    o.leaseTTL,
		RenewMargin: time.Duration(o.renewMargin) * time.Minute,
		Logger:      log,
	})
	cfg, err := waitForConfig(ctx, mgr, log)
	if err != nil {
		return err
	}
	ext, err := lookupExtIface(o)
	if err != nil {
		return err
	}
	log.Info("using interface", "iface", ext.Iface.Name, "addr", ext.IfaceAddr, "public_ip", ext.ExtAddr, "mtu", ext.Iface.MTU)
	be, err := newBackend(cfg, ext, o, log)
	if err != nil {
		return err
	}
	attrs, err := be.Init(ctx)
	if err != nil {
		return fmt.Errorf("backend %s: %w", cfg.BackendType, err)
	}
	lease, err := mgr.AcquireLease(ctx, cfg, attrs, previousSubnet(o.subnetFile, log))
	if err != nil {
		return fmt.Errorf("acquire subnet lease: %w", err)
	}
	log.Info("subnet lease acquired", "subnet", lease.Subnet, "expires", lease.Expiration)
	if err := be.Start(ctx, lease); err != nil {
		return fmt.Errorf("backend %s: %w", cfg.BackendType, err)
	}
	if err := subnet.WriteEnv(o.subnetFile, envFor(cfg, lease, be.MTU(), o.ipMasq)); err != nil {
		return fmt.Errorf("write %s: %w", o.subnetFile, err)
	}
	log.Info("wrote subnet file", "path", o.subnetFile, "mtu", be.MTU())
	if o.ipMasq {
		log.Warn("--ip-masq: FLANNEL_IPMASQ=true is written, but flannelu does not program flanneld's masquerade rules; add them on the host")
	}
	return runLoops(ctx, o, mgr, cfg, lease, be, log)
}

// runLoops runs the lease keeper, the watcher, the health server and the
// backend; the first fatal error stops them all.
func runLoops(ctx context.Context, o *options, mgr *subnet.Manager, cfg *subnet.Config, lease subnet.Lease, be backend.Backend, log *slog.Logger) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	goFatal := func(name string, fn func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				cancel(fmt.Errorf("%s: %w", name, err))
			}
		}()
	}
	goFatal("lease", func(ctx context.Context) error { return mgr.KeepLease(ctx, cfg, lease) })
	// The backend runs only once it has the peers of the first snapshot:
	// a kernel backend's reconcile would otherwise take the empty peer set
	// of a restart for the truth and delete every peer's entries.
	synced := make(chan struct{})
	var once sync.Once
	goFatal("watch", func(ctx context.Context) error {
		return mgr.WatchLeases(ctx, func(evs []subnet.Event) {
			if peers := withoutOwn(evs, lease.Subnet); len(peers) > 0 {
				be.HandleEvents(ctx, peers)
			}
			once.Do(func() { close(synced) })
		})
	})
	if o.healthzPort > 0 {
		goFatal("healthz", func(ctx context.Context) error { return serveHealth(ctx, o, be, mgr) })
	}
	goFatal("backend", func(ctx context.Context) error {
		select {
		case <-synced:
		case <-ctx.Done():
			return nil
		}
		return be.Run(ctx)
	})
	<-ctx.Done()
	wg.Wait()
	if err := context.Cause(ctx); !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// withoutOwn drops events about this host's own lease: backends only ever
// see peers.
func withoutOwn(evs []subnet.Event, own netip.Prefix) []subnet.Event {
	out := evs[:0:0]
	for _, ev := range evs {
		if ev.Lease.Subnet != own {
			out = append(out, ev)
		}
	}
	return out
}

// waitForConfig polls for the network config as flanneld does: a missing
// or invalid config is logged (with the reason) and read again.
func waitForConfig(ctx context.Context, mgr *subnet.Manager, log *slog.Logger) (*subnet.Config, error) {
	for {
		cfg, err := mgr.GetConfig(ctx)
		if err == nil {
			log.Info("network config", "network", cfg.Network, "subnet_len", cfg.SubnetLen, "backend", cfg.BackendType)
			return cfg, nil
		}
		log.Error("cannot use the network config, retrying in 1s", "error", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// previousSubnet is the subnet of the last subnet.env, which the lease
// manager tries before a random one.
func previousSubnet(path string, log *slog.Logger) netip.Prefix {
	env, err := subnet.ReadEnv(path)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			log.Warn("ignoring previous subnet file", "path", path, "error", err)
		}
		return netip.Prefix{}
	}
	return env.Subnet.Masked()
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
