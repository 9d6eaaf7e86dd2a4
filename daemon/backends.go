package daemon

import (
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/backend/alloc"
	"github.com/flannelu/flannelu/backend/extension"
	"github.com/flannelu/flannelu/backend/hostgw"
	"github.com/flannelu/flannelu/backend/ipip"
	"github.com/flannelu/flannelu/backend/udp"
	"github.com/flannelu/flannelu/backend/vxlan"
	"github.com/flannelu/flannelu/backend/wireguard"
	"github.com/flannelu/flannelu/internal/metrics"
	"github.com/flannelu/flannelu/subnet"
)

// newBackend builds the backend the network config names. A type flannelu
// does not have is an error at start-up, never a silent no-op.
// inherit is a predecessor's udp device and sockets (nil: open new ones).
func newBackend(cfg *subnet.Config, ext *backend.ExternalInterface, o *Options, reg *metrics.Registry, log *slog.Logger, inherit *udp.Inherited) (backend.Backend, error) {
	warnUnusedOptions(o, cfg.BackendType, log)
	// vxlan and host-gw tag their own log lines with backend=<type>;
	// adding it here as well printed the attribute twice.
	switch cfg.BackendType {
	case "udp":
		return udp.New(ext, forwarderOptions(cfg, o, reg, log, inherit))
	case "vxlan":
		return vxlan.New(ext, vxlan.Options{
			Network:           cfg.Network,
			IPv6Network:       cfg.IPv6Network,
			BackendJSON:       cfg.Backend,
			ReconcileInterval: o.reconcileInterval,
			Logger:            log,
			Metrics:           reg,
		})
	case "host-gw":
		return hostgw.New(ext, hostgw.Options{
			Network:           cfg.Network,
			IPv6Network:       cfg.IPv6Network,
			ReconcileInterval: o.reconcileInterval,
			Logger:            log,
			Metrics:           reg,
		})
	case ipip.BackendType:
		// The userspace path takes nothing over from a predecessor
		// (handover.go has it leave first).
		fwd := forwarderOptions(cfg, o, reg, log, nil)
		return ipip.New(ext, ipip.Options{Network: fwd.Network, IPv6Network: fwd.Network6, BackendJSON: cfg.Backend,
			ReconcileInterval: o.reconcileInterval, Logger: log, Metrics: reg, Forwarder: fwd})
	case extension.BackendType:
		return extension.New(ext, extension.Options{Network: cfg.Network, BackendJSON: cfg.Backend, Logger: log, Metrics: reg})
	case alloc.BackendType:
		return alloc.New(ext, log), nil
	case wireguard.BackendType:
		network, network6 := enabledNetworks(cfg)
		return wireguard.New(ext, wireguard.Options{
			Network:     network,
			IPv6Network: network6,
			BackendJSON: cfg.Backend,
			KeyFile:     wireguardKeyFile(o),
			Logger:      log,
			Metrics:     reg,
		})
	}
	return nil, refuse(cfg.BackendType)
}

// forwarderOptions are the userspace forwarder's options: the udp
// backend's, and the ipip backend's where the kernel has no ipip.
func forwarderOptions(cfg *subnet.Config, o *Options, reg *metrics.Registry, log *slog.Logger, inherit *udp.Inherited) udp.Options {
	// Unlike flanneld's, the udp backend carries IPv6 too (dual stack and
	// IPv6-only).
	network, network6 := enabledNetworks(cfg)
	return udp.Options{
		Network:     network,
		Network6:    network6,
		BackendJSON: cfg.Backend,
		Workers:     o.udpWorkers,
		BusyPoll:    o.udpBusyPoll,
		Offload:     o.udpOffload,
		Trace:       o.trace,
		TracePcap:   o.tracePcap,
		TraceRate:   o.traceRate,
		Logger:      log.With("backend", cfg.BackendType),
		Metrics:     reg,

		ForeignSources: o.udpForeignSources,
		Inherit:        inherit,
	}
}

// enabledNetworks are the config's IPv4 and IPv6 networks, each zero when
// the config does not enable its family.
func enabledNetworks(cfg *subnet.Config) (network, network6 netip.Prefix) {
	if cfg.EnableIPv4 {
		network = cfg.Network
	}
	if cfg.EnableIPv6 {
		network6 = cfg.IPv6Network
	}
	return network, network6
}

// wireguardKeyFile is WIREGUARD_KEY_FILE, as in flanneld, else wgkey
// beside --subnet-file: flanneld's /run/flannel/wgkey with the default
// subnet file, and a file of its own for each host whose subnet file is
// its own (test hosts on one machine), so that two hosts never share a
// key.
func wireguardKeyFile(o *Options) string {
	if f := os.Getenv(wireguard.KeyFileEnv); f != "" {
		return f
	}
	return filepath.Join(filepath.Dir(o.subnetFile), "wgkey")
}
