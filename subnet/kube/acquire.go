package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flannelu/flannelu/subnet"
)

// LeaseDuration is the nominal lifetime flanneld gives a Kubernetes lease.
// Nothing renews or expires it: the lease lives as long as the node's
// podCIDR.
const LeaseDuration = 24 * time.Hour

// AcquireLease takes this node's podCIDR(s) as the lease and publishes
// attrs in the node's flannel annotations (a strategic merge patch of the
// nodes/status subresource, as flanneld), unless they are already there.
// prev is not used: the podCIDR is the subnet.
//
// Where flanneld exits, it waits, watching the node through the informer:
// for the node to be registered, and for a podCIDR (one log line naming
// the node and the fix), then takes the lease. A podCIDR outside the
// configured network, a public-ip-overwrite (public-ipv6-overwrite) that
// is not an address, a patch refused by RBAC (the error names the
// permission, after a few retries: a restarting API server refuses
// everything for a moment) or ctx ending are errors; other API errors are
// retried.
func (s *Store) AcquireLease(ctx context.Context, cfg *subnet.Config, attrs subnet.LeaseAttrs, _ netip.Prefix) (subnet.Lease, error) {
	f, err := s.follow(s.node, nil)
	if err != nil {
		return subnet.Lease{}, err
	}
	defer f.stop()
	if !f.synced(ctx) {
		return subnet.Lease{}, ctx.Err()
	}
	var waiting string // what the last log line said we wait for
	refusals := 0
	for {
		l, waitFor, err := s.tryAcquire(ctx, f, cfg, attrs)
		switch {
		case errors.Is(err, ErrForbidden) && refusals < forbiddenRetries:
			// A restarting API server refuses everything until its RBAC
			// cache is filled: retry a few times before believing it.
			refusals++
			s.log.Warn("the API server refused the patch; retrying", "node", s.node, "error", err)
			f.retry(s.node)
		case err != nil:
			return subnet.Lease{}, err
		case waitFor == "":
			s.log.Info("subnet lease is the node's podCIDR", "node", s.node, "subnet", l.Subnet, "ipv6_subnet", l.IPv6Subnet)
			return l, nil
		case waitFor != waiting && waitFor != "retry":
			waiting = waitFor
			s.log.Warn(waitFor, "node", s.node)
		}
		if _, ok := f.next(ctx); !ok {
			return subnet.Lease{}, ctx.Err()
		}
	}
}

// forbiddenRetries is how often AcquireLease retries a patch RBAC refused
// (with backoff from retryMin: about 7 s in all) before it gives up.
const forbiddenRetries = 4

// Messages for what AcquireLease waits for, logged once each.
const (
	waitNode = "node not found in the API server: waiting for it to be registered " +
		"(NODE_NAME, or the pod's spec.nodeName, must be the kubelet's node name)"
	waitPodCIDR = "node has no podCIDR yet: waiting for one. Fix: run kube-controller-manager with " +
		"--allocate-node-cidrs=true and --cluster-cidr set to net-conf.json's Network, " +
		"or set the node's spec.podCIDR"
)

// tryAcquire makes one attempt from the cached node. waitFor is empty on
// success, else what to wait for before the next attempt ("retry": a
// failed patch, already queued again).
func (s *Store) tryAcquire(ctx context.Context, f *follower, cfg *subnet.Config, attrs subnet.LeaseAttrs) (l subnet.Lease, waitFor string, err error) {
	n := s.cachedNode(s.node)
	if n == nil {
		return l, waitNode, nil
	}
	l, err = ownLease(n, cfg)
	if err != nil || !l.Subnet.IsValid() && !l.IPv6Subnet.IsValid() {
		return l, waitPodCIDR, err
	}
	if err := s.ann.Overwrites(n, cfg.EnableIPv4, cfg.EnableIPv6); err != nil {
		return l, "", fmt.Errorf("%w; it would be published as the node's public IP, and peers would skip the node: "+
			"set it to an address of this node, or remove it (kubectl annotate node %s <annotation>-)", err, s.node)
	}
	l.Attrs, l.Expiration = attrs, time.Now().Add(LeaseDuration)
	want := s.ann.Published(attrs, n)
	if len(Differs(n, want)) == 0 {
		return l, "", nil
	}
	switch err := s.patchAnnotations(ctx, n, want); {
	case err == nil:
		f.done(s.node)
		return l, "", nil
	case isForbidden(err):
		return l, "", permissionError(err, "nodes", "status", s.node, "patch")
	case apierrors.IsNotFound(err):
		return l, waitNode, nil
	default:
		s.log.Warn("publishing the lease on the node failed; retrying", "node", s.node, "error", err)
		f.retry(s.node)
		return l, "retry", nil
	}
}

// ownLease checks a node's podCIDRs against cfg and returns them as a
// lease without attributes; no subnet at all when none is assigned yet.
func ownLease(n *v1.Node, cfg *subnet.Config) (subnet.Lease, error) {
	v4, v6, err := PodCIDRs(n)
	if err != nil || !v4.IsValid() && !v6.IsValid() {
		return subnet.Lease{}, err
	}
	var l subnet.Lease
	if cfg.EnableIPv4 {
		if l.Subnet, err = inNetwork(n, v4, cfg.Network, "IPv4", "Network"); err != nil {
			return l, err
		}
	}
	if cfg.EnableIPv6 {
		if l.IPv6Subnet, err = inNetwork(n, v6, cfg.IPv6Network, "IPv6", "IPv6Network"); err != nil {
			return l, err
		}
	}
	return l, nil
}

func inNetwork(n *v1.Node, p, network netip.Prefix, family, field string) (netip.Prefix, error) {
	switch {
	case !p.IsValid():
		return p, fmt.Errorf("node %q: podCIDRs %v have no %s one, but net-conf.json enables %s", n.Name, n.Spec.PodCIDRs, family, family)
	case p.Bits() < network.Bits() || !network.Contains(p.Addr()):
		return p, fmt.Errorf("node %q: podCIDR %s is not inside net-conf.json's %s %s "+
			"(kube-controller-manager's --cluster-cidr must be that network)", n.Name, p, field, network)
	}
	return p, nil
}

// patchAnnotations sets the annotations want on node n, on the
// nodes/status subresource (all flannel's ClusterRole may patch), with
// the strategic merge patch flanneld sends: its two-way patch from the
// cached node, which for annotations set is {"metadata":{"annotations":
// {the keys that differ}}}.
func (s *Store) patchAnnotations(ctx context.Context, n *v1.Node, want map[string]string) error {
	patch, err := annotationPatch(n, want)
	if err != nil {
		return err
	}
	return s.patchStatus(ctx, patch)
}

func annotationPatch(n *v1.Node, want map[string]string) ([]byte, error) {
	changed := map[string]string{}
	for _, k := range Differs(n, want) {
		changed[k] = want[k]
	}
	return json.Marshal(map[string]any{"metadata": map[string]any{"annotations": changed}})
}

// patchStatus applies a strategic merge patch to the node's status
// subresource and remembers the resourceVersion it produced.
func (s *Store) patchStatus(ctx context.Context, patch []byte) error {
	out, err := s.client.PatchNodeStatus(ctx, s.node, types.StrategicMergePatchType, patch)
	if err == nil {
		rv := out.ResourceVersion
		s.written.Store(&rv)
	}
	return err
}

// stale reports whether the cached node is older than this store's last
// patch of it: the informer has not caught up yet, so comparing its
// annotations would report our own change as missing.
func (s *Store) stale(n *v1.Node) bool {
	w := s.written.Load()
	if w == nil {
		return false
	}
	// resourceVersions are opaque, but etcd-backed ones are revisions.
	cached, err1 := strconv.ParseUint(n.ResourceVersion, 10, 64)
	written, err2 := strconv.ParseUint(*w, 10, 64)
	return err1 == nil && err2 == nil && cached < written
}
