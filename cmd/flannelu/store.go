package main

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/flannelu/flannelu/handover"
	"github.com/flannelu/flannelu/kube"
	"github.com/flannelu/flannelu/subnet"
)

// openStore returns the store the flags choose: the Kubernetes API
// (--kube-subnet-mgr) or etcd, and its name for a hand-over
// (handover.Identity). closeStore releases it.
func openStore(ctx context.Context, o *options, log *slog.Logger) (store subnet.Store, id string, closeStore func(), err error) {
	if o.kubeSubnetMgr {
		return openKubeStore(ctx, o, log)
	}
	cli, err := newEtcdClient(o)
	if err != nil {
		return nil, "", nil, err
	}
	return subnet.NewManager(cli, subnet.Options{
		Prefix:      o.etcdPrefix,
		LeaseTTL:    o.leaseTTL,
		RenewMargin: time.Duration(o.renewMargin) * time.Minute,
		Logger:      log,
	}), handover.EtcdStore(o.etcdEndpoints, o.etcdPrefix), func() { cli.Close() }, nil
}

// openKubeStore connects as flanneld does (--kube-api-url,
// --kubeconfig-file, else in-cluster), finds this host's node (NODE_NAME,
// else the pod's spec.nodeName) and starts the node informer.
func openKubeStore(ctx context.Context, o *options, log *slog.Logger) (subnet.Store, string, func(), error) {
	kube.LogTo(log)
	cfg, err := kube.RESTConfig(o.kubeAPIURL, o.kubeconfigFile)
	if err != nil {
		return nil, "", nil, err
	}
	client, err := kube.NewClient(cfg)
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
	log.Info("Kubernetes subnet manager", "node", node, "api_server", cfg.Host, "net_config", o.netConfigPath)
	return s, handover.KubeStore(node), cancel, nil
}

// useNodePublicIP takes the node's node-public-ip and node-public-ipv6
// annotations over --public-ip and --public-ipv6, as flannel v0.28 does;
// a no-op with etcd.
func useNodePublicIP(ctx context.Context, store subnet.Store, o *options, log *slog.Logger) error {
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
