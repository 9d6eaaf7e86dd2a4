package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	"github.com/flannelu/flannelu/internal/outage"
	"github.com/flannelu/flannelu/subnet"
)

// ResyncPeriod is flanneld's node informer resync period.
const ResyncPeriod = 5 * time.Minute

// Options configure a Store; NodeName and NetConfPath are required.
type Options struct {
	NodeName         string // this host's Node object
	AnnotationPrefix string // default DefaultPrefix
	NetConfPath      string // net-conf.json
	// SetNodeNetworkUnavailable sets the node's NetworkUnavailable
	// condition to False (reason FlannelIsUp) once the lease is kept, as
	// flanneld's --set-node-network-unavailable (default true there).
	SetNodeNetworkUnavailable bool
	Logger                    *slog.Logger // default slog.Default()
}

// Store is the Kubernetes subnet.Store. Its informer runs from New until
// the context given to New ends.
type Store struct {
	client       *Client
	node         string
	ann          Annotations
	annKeys      []string // ann's keys: the annotations the informer keeps (slim)
	netConf      string
	setCondition bool
	log          *slog.Logger
	informer     cache.SharedIndexInformer
	relists      atomic.Int64 // full lists of the nodes after the first sync
	queue        queueDepth   // the watch's queue of changed nodes
	cfg          atomic.Pointer[subnet.Config]
	written      atomic.Pointer[string] // resourceVersion of this store's last patch of its node
	leaseTrouble atomic.Pointer[string] // what is wrong with the node's lease annotations; "" or nil: nothing

	malformed atomic.Uint64
	warnMu    sync.Mutex
	warned    map[string]string // node name -> resourceVersion reported malformed
	// badOverwrite is each peer node's invalid public IP overwrite
	// reported (the error), so each is counted once.
	badOverwrite map[string]string
}

var _ subnet.Store = (*Store)(nil)

// New starts the node informer on client and returns the store; the
// informer stops when ctx ends.
func New(ctx context.Context, client *Client, opts Options) (*Store, error) {
	if opts.NodeName == "" {
		return nil, errors.New("kube: no node name")
	}
	if opts.AnnotationPrefix == "" {
		opts.AnnotationPrefix = DefaultPrefix
	}
	ann, err := NewAnnotations(opts.AnnotationPrefix)
	if err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Store{
		client:       client,
		node:         opts.NodeName,
		ann:          ann,
		netConf:      opts.NetConfPath,
		setCondition: opts.SetNodeNetworkUnavailable,
		log:          opts.Logger,
		warned:       map[string]string{},
		badOverwrite: map[string]string{},
	}
	s.annKeys = ann.keys()
	s.informer = cache.NewSharedIndexInformerWithOptions(s.listWatch(), &v1.Node{},
		cache.SharedIndexInformerOptions{ResyncPeriod: ResyncPeriod})
	if err := s.informer.SetTransform(s.slim); err != nil {
		return nil, err
	}
	if err := s.informer.SetWatchErrorHandlerWithContext(s.watchError); err != nil {
		return nil, err
	}
	go s.informer.RunWithContext(ctx)
	return s, nil
}

// listWatch is the nodes' list and watch, counting the full lists (a
// list, or a watch that starts with every node: client-go's watch-list)
// after the informer's first sync: the informer catching up after a watch
// it could not resume (410 Gone: its resourceVersion was compacted away).
func (s *Store) listWatch() *cache.ListWatch {
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			s.countRelist(o)
			list, err := s.client.ListNodes(ctx, o)
			if err == nil {
				// Slimmed here, a page at a time, rather than by the
				// informer once it has the whole list: the full nodes of
				// a page are garbage before the next page is decoded.
				for i := range list.Items {
					list.Items[i] = *s.slimNode(&list.Items[i])
				}
			}
			return list, err
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			if o.SendInitialEvents != nil && *o.SendInitialEvents {
				s.countRelist(o)
			}
			return s.client.WatchNodes(ctx, o)
		},
	}
}

func (s *Store) countRelist(o metav1.ListOptions) {
	if s.informer.HasSynced() {
		n := s.relists.Add(1)
		s.log.Info("listing all nodes again: the node watch could not resume", "relists", n, "resource_version", o.ResourceVersion)
	}
}

// QueueDepth is how many changed nodes wait in the watch's queue now,
// and the most that ever waited: each node is queued once however often
// it changed, so the queue never holds more than the cluster's nodes.
func (s *Store) QueueDepth() (now, most int64) { return s.queue.now.Load(), s.queue.max.Load() }

// HasSynced reports whether the informer has listed the nodes once.
func (s *Store) HasSynced() bool { return s.informer.HasSynced() }

// Relists counts the informer's full lists of the nodes after its first
// sync: how often it recovered from a watch it could not resume.
func (s *Store) Relists() int64 { return s.relists.Load() }

// watchError replaces client-go's default report of a failed list or
// watch: the informer retries either way, but a refusal by RBAC names the
// permission missing. An API server that does not answer is the outage
// tracker's to log (once when it starts, once a minute, once when it
// ends), not once per retry.
func (s *Store) watchError(_ context.Context, _ *cache.Reflector, err error) {
	switch {
	case !answered(err):
	case isForbidden(err):
		// Also seen for a moment while a restarted API server fills its
		// RBAC cache; the informer retries.
		s.log.Warn("the API server refused to list or watch the nodes; retrying", "error", permissionError(err, "nodes", "", "", "list", "watch"))
	case isExpired(err):
		s.log.Info("node watch expired (410 Gone): listing the nodes again", "error", err)
	default:
		s.log.Info("node list or watch failed; retrying", "error", err)
	}
}

// GetConfig reads and validates net-conf.json (ParseKubeConfig: the same
// JSON as etcd's config; the podCIDR is the subnet, so the subnet range
// fields are not checked).
func (s *Store) GetConfig(context.Context) (*subnet.Config, error) {
	data, err := os.ReadFile(s.netConf)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist (--net-config-path)", subnet.ErrNoConfig, s.netConf)
	}
	if err != nil {
		return nil, fmt.Errorf("kube: %w", err)
	}
	cfg, err := subnet.ParseKubeConfig(data)
	if err != nil {
		return nil, fmt.Errorf("kube: %s: %w", s.netConf, err)
	}
	s.cfg.Store(cfg)
	return cfg, nil
}

// config is the config GetConfig read last, read now if it never did.
func (s *Store) config(ctx context.Context) (*subnet.Config, error) {
	if cfg := s.cfg.Load(); cfg != nil {
		return cfg, nil
	}
	return s.GetConfig(ctx)
}

// Reachable is nil while the API server answers, else an error saying
// for how long it has not and why (for /readyz).
func (s *Store) Reachable() error { return s.client.reach.Err() }

// Outage is the tracker every request to the API server reports to.
func (s *Store) Outage() *outage.Tracker { return s.client.reach }

// LeaseHeld is nil while the node carries this host's lease as published,
// else what is being put right (for /readyz).
func (s *Store) LeaseHeld() error {
	if p := s.leaseTrouble.Load(); p != nil && *p != "" {
		return errors.New(*p)
	}
	return nil
}

func (s *Store) setLeaseTrouble(msg string) { s.leaseTrouble.Store(&msg) }

// LeaseKey is this host's node name: WatchLeases names leases by node.
func (s *Store) LeaseKey(subnet.Lease) string { return s.node }

// MalformedLeases counts peer nodes skipped because their podCIDRs or
// flannel annotations could not be parsed, once per node resourceVersion.
func (s *Store) MalformedLeases() uint64 { return s.malformed.Load() }

// peerLease reads a managed node's lease, counting and logging (once per
// resourceVersion) a malformed one instead of returning its error. A
// public-ip-overwrite that is not an address is counted and logged too
// (once per value), but does not make the lease malformed: peers read the
// public-ip the node's flannel published, which the bad overwrite must
// not have replaced (flannelu refuses to publish one; an older flannel
// that did publish it made public-ip malformed, and the node's last valid
// lease stays).
func (s *Store) peerLease(n *v1.Node, cfg *subnet.Config) (subnet.Lease, bool) {
	l, err := s.ann.NodeLease(n, cfg)
	if err == nil {
		s.checkPeerOverwrites(n, cfg)
		return l, true
	}
	s.warnMu.Lock()
	seen := s.warned[n.Name] == n.ResourceVersion
	s.warned[n.Name] = n.ResourceVersion
	s.warnMu.Unlock()
	if !seen {
		s.malformed.Add(1)
		s.log.Warn("skipping malformed node lease", "node", n.Name, "resource_version", n.ResourceVersion, "error", err)
	}
	return subnet.Lease{}, false
}

func (s *Store) checkPeerOverwrites(n *v1.Node, cfg *subnet.Config) {
	msg := ""
	if err := s.ann.Overwrites(n, cfg.EnableIPv4, cfg.EnableIPv6); err != nil {
		msg = err.Error()
	}
	s.warnMu.Lock()
	seen := s.badOverwrite[n.Name] == msg
	if msg == "" {
		delete(s.badOverwrite, n.Name)
	} else {
		s.badOverwrite[n.Name] = msg
	}
	s.warnMu.Unlock()
	if !seen && msg != "" {
		s.malformed.Add(1)
		s.log.Warn("peer node's public IP overwrite is not an address; using the public IP it published", "node", n.Name,
			"public_ip", n.Annotations[s.ann.PublicIP], "error", msg)
	}
}

// cachedNode is the informer's copy of a node, nil when it has none.
// The object is shared: never modify it.
func (s *Store) cachedNode(name string) *v1.Node {
	obj, exists, err := s.informer.GetIndexer().GetByKey(name)
	if err != nil || !exists {
		return nil
	}
	n, _ := obj.(*v1.Node)
	return n
}

// NodePublicIPs returns the node-public-ip and node-public-ipv6 a user
// annotated this node with (zero when unset, or when the node is not
// registered yet), which flannel v0.28 takes over --public-ip. It waits
// for the informer's first list.
func (s *Store) NodePublicIPs(ctx context.Context) (ip4, ip6 netip.Addr, err error) {
	if !WaitSynced(ctx, s.informer.HasSynced) {
		return ip4, ip6, ctx.Err()
	}
	if n := s.cachedNode(s.node); n != nil {
		return s.ann.NodePublicIPs(n)
	}
	return ip4, ip6, nil
}
