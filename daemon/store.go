package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/flannelu/flannelu/handover"
	"github.com/flannelu/flannelu/internal/metrics"
	"github.com/flannelu/flannelu/internal/outage"
	"github.com/flannelu/flannelu/subnet"
	"github.com/flannelu/flannelu/subnet/etcd"
	"github.com/flannelu/flannelu/subnet/kube"
)

// outageTracked is a store whose requests report to an outage tracker:
// both (the etcd Manager, the Kubernetes Store), with one mechanism.
type outageTracked interface{ Outage() *outage.Tracker }

// exportStoreHealth puts the store's reachability on /metrics: a gauge, 1
// while it answers and 0 during an outage (as /readyz's "store" line), and
// the count of requests it did not answer.
func exportStoreHealth(reg *metrics.Registry, store subnet.Store) {
	if q, ok := store.(interface{ QueueDepth() (now, most int64) }); ok {
		reg.GaugeFunc("flannelu_store_queue_depth", "Changed nodes waiting to be read (Kubernetes mode): each node is queued once however often it changed.",
			func() float64 { n, _ := q.QueueDepth(); return float64(n) })
		reg.GaugeFunc("flannelu_store_queue_depth_max", "The most changed nodes that waited to be read at once since the first list was handled (Kubernetes mode).",
			func() float64 { _, m := q.QueueDepth(); return float64(m) })
	}
	s, ok := store.(outageTracked)
	if !ok {
		return
	}
	t := s.Outage()
	reg.GaugeFunc("flannelu_store_reachable",
		"1 while the store (etcd or the Kubernetes API) answers, 0 during an outage.", func() float64 {
			if t.Down() {
				return 0
			}
			return 1
		})
	reg.CounterFunc("flannelu_store_request_failures_total",
		"Requests to the store (etcd or the Kubernetes API) that got no answer: no connection, a timeout, or a server that could not serve.", t.Failures)
}

// openStore returns the store the flags choose: the Kubernetes API
// (--kube-subnet-mgr) or etcd, and its name for a hand-over
// (handover.Identity). closeStore releases it.
func openStore(ctx context.Context, o *Options, log *slog.Logger) (store subnet.Store, id string, closeStore func(), err error) {
	if o.kubeSubnetMgr {
		return openKubeStore(ctx, o, log)
	}
	cli, err := newEtcdClient(o)
	if err != nil {
		return nil, "", nil, err
	}
	return etcd.NewManager(cli, etcd.Options{
		Prefix:      o.etcdPrefix,
		LeaseTTL:    o.leaseTTL,
		RenewMargin: time.Duration(o.renewMargin) * time.Minute,
		Logger:      log,
	}), handover.EtcdStore(o.etcdEndpoints, o.etcdPrefix), func() { cli.Close() }, nil
}

// openKubeStore connects as flanneld does (--kube-api-url,
// --kubeconfig-file, else in-cluster), finds this host's node (NODE_NAME,
// else the pod's spec.nodeName) and starts the node informer.
func openKubeStore(ctx context.Context, o *Options, log *slog.Logger) (subnet.Store, string, func(), error) {
	kube.LogTo(log)
	cfg, err := kube.RESTConfig(o.kubeAPIURL, o.kubeconfigFile)
	if err != nil {
		return nil, "", nil, err
	}
	client, err := kube.NewClient(cfg, log)
	if err != nil {
		return nil, "", nil, err
	}
	node, err := kube.NodeName(ctx, client, os.Getenv)
	if err != nil {
		return nil, "", nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	s, err := kube.New(ctx, client, kube.Options{
		NodeName:                  node,
		AnnotationPrefix:          o.kubeAnnotationPrefix,
		NetConfPath:               o.netConfigPath,
		SetNodeNetworkUnavailable: o.setNodeNetworkUnavailable,
		Logger:                    log,
	})
	if err != nil {
		cancel()
		return nil, "", nil, err
	}
	if err := waitNodeSync(ctx, s, nodeSyncTimeout, o.contWhenCacheNotReady, log); err != nil {
		cancel()
		return nil, "", nil, err
	}
	log.Info("Kubernetes subnet manager", "node", node, "api_server", cfg.Host, "net_config", o.netConfigPath)
	return s, handover.KubeStore(node), cancel, nil
}

// nodeSyncTimeout is flanneld's nodeControllerSyncTimeout.
const nodeSyncTimeout = 10 * time.Minute

// waitNodeSync waits, as flanneld v0.28 does, until the node informer has
// listed the nodes (looking every few milliseconds: flanneld looks every
// second, a second of every start); past timeout it is an error, unless cont
// (CONT_WHEN_CACHE_NOT_READY=true): then the start goes on, and what
// needs the nodes (the lease, the peers) waits for them on its own.
func waitNodeSync(ctx context.Context, s interface{ HasSynced() bool }, timeout time.Duration, cont bool, log *slog.Logger) error {
	log.Info("waiting for the node informer to sync", "timeout", timeout)
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if kube.WaitSynced(wctx, s.HasSynced) {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if cont {
		log.Error("node informer not synced in time; going on (CONT_WHEN_CACHE_NOT_READY=true)", "timeout", timeout)
		return nil
	}
	return fmt.Errorf("node informer not synced within %v (set CONT_WHEN_CACHE_NOT_READY=true to go on regardless)", timeout)
}

// useNodePublicIP takes the node's node-public-ip and node-public-ipv6
// annotations over --public-ip and --public-ipv6, as flannel v0.28 does;
// a no-op with etcd.
func useNodePublicIP(ctx context.Context, store subnet.Store, o *Options, log *slog.Logger) error {
	s, ok := store.(*kube.Store)
	if !ok {
		return nil
	}
	ip, ip6, err := s.NodePublicIPs(ctx)
	if err != nil {
		return err
	}
	if ip.IsValid() {
		log.Info("public IP from the node's node-public-ip annotation", "public_ip", ip)
		o.publicIP = ip.String()
	}
	if ip6.IsValid() {
		log.Info("public IPv6 from the node's node-public-ipv6 annotation", "public_ipv6", ip6)
		o.publicIPv6 = ip6.String()
	}
	return nil
}
