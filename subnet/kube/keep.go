package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flannelu/flannelu/subnet"
)

// KeepLease holds the lease until ctx ends, then returns nil. A Kubernetes
// lease is never renewed (its 24 h expiry is nominal, as flanneld's);
// instead KeepLease first sets the node's NetworkUnavailable condition to
// False (reason FlannelIsUp) when the store was asked to, as flanneld does
// once its network runs, then watches the node through the informer and
// puts the flannel annotations back when someone changes or removes them.
// It returns an error matching ErrLeaseLost when the lease is gone for
// good: the node was deleted (also matching subnet.ErrHostRemoved), or it
// came back with another podCIDR. flannelu then exits, to start again with
// the node's new state. A NetworkUnavailable condition someone set back to
// True is set to False again; a public-ip-overwrite that is not an address
// is not published (the node keeps its public IP) and is warned about. A
// failed patch, even one RBAC refused (logged with the permission it
// lacks), is retried with backoff: forwarding does not depend on it.
func (s *Store) KeepLease(ctx context.Context, cfg *subnet.Config, lease subnet.Lease) error {
	f, err := s.follow(s.node, nil)
	if err != nil {
		return err
	}
	defer f.stop()
	if !f.synced(ctx) {
		return nil
	}
	k := &keeper{s: s, f: f, cfg: cfg, lease: lease, conditionDone: !s.setCondition}
	for {
		if err := k.check(ctx); err != nil {
			return err
		}
		if _, ok := f.next(ctx); !ok {
			return nil
		}
	}
}

type keeper struct {
	s             *Store
	f             *follower
	cfg           *subnet.Config
	lease         subnet.Lease
	conditionDone bool
	badOverwrite  string // the invalid overwrite last warned about
}

// check compares the cached node with the lease; a failed patch is queued
// again with backoff.
func (k *keeper) check(ctx context.Context) error {
	s := k.s
	n := s.cachedNode(s.node)
	if n == nil {
		return fmt.Errorf("%w (%w): node %q was deleted from the API server, and with it the podCIDR %s this host leased",
			ErrLeaseLost, subnet.ErrHostRemoved, s.node, k.lease.Subnet)
	}
	if own, err := ownLease(n, k.cfg); err != nil || own.Subnet != k.lease.Subnet || own.IPv6Subnet != k.lease.IPv6Subnet {
		return fmt.Errorf("%w: node %q now has podCIDRs %v, not the %s %s this host leased (the node was registered again)",
			ErrLeaseLost, s.node, n.Spec.PodCIDRs, k.lease.Subnet, k.lease.IPv6Subnet)
	}
	if s.stale(n) {
		return nil // our own patch is on its way to the cache
	}
	k.checkOverwrites(n)
	if k.conditionDone && s.setCondition && !networkAvailable(n) {
		s.log.Warn("the node's NetworkUnavailable condition was set by someone else: setting it back to False", "node", s.node,
			"condition", conditionOf(n, v1.NodeNetworkUnavailable))
		k.conditionDone = false
	}
	var err error
	if !k.conditionDone {
		if err = s.setNetworkAvailable(ctx); err == nil {
			k.conditionDone = true
			s.log.Info("node condition set", "node", s.node, "type", v1.NodeNetworkUnavailable, "status", v1.ConditionFalse, "reason", conditionReason)
		}
	}
	if err == nil {
		want := s.ann.Published(k.lease.Attrs, n)
		if keys := Differs(n, want); len(keys) > 0 {
			slices.Sort(keys)
			s.log.Warn("the node's flannel annotations were changed by someone else: restoring them", "node", s.node, "annotations", keys)
			s.setLeaseTrouble(fmt.Sprintf("the node's annotations %v were changed by someone else, being restored", keys))
			err = s.patchAnnotations(ctx, n, want)
		}
	}
	switch {
	case err == nil:
		s.setLeaseTrouble("")
		k.f.done(s.node)
	case isForbidden(err):
		// Not fatal: the data path works without this patch, and a
		// restarting API server refuses everything for a moment.
		s.log.Error("the API server refused to update the node; retrying", "node", s.node,
			"error", permissionError(err, "nodes", "status", s.node, "patch"))
		k.f.retry(s.node)
	case apierrors.IsNotFound(err):
		// The node was deleted meanwhile: its delete event follows.
	default:
		s.log.Warn("updating the node failed; retrying", "node", s.node, "error", err)
		k.f.retry(s.node)
	}
	return nil
}

// checkOverwrites warns, once per value, about a public-ip-overwrite that
// is not an address: it is not published, and the node keeps its public
// IP (as at start, where it is refused).
func (k *keeper) checkOverwrites(n *v1.Node) {
	err := k.s.ann.Overwrites(n, k.cfg.EnableIPv4, k.cfg.EnableIPv6)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if msg != "" && msg != k.badOverwrite {
		k.s.log.Warn("ignoring the node's public IP overwrite: not an address; the node keeps its published public IP", "node", k.s.node, "error", err)
	}
	k.badOverwrite = msg
}

// networkAvailable reports whether n's NetworkUnavailable condition is
// False (by flannel or anyone else).
func networkAvailable(n *v1.Node) bool {
	c := conditionOf(n, v1.NodeNetworkUnavailable)
	return c != nil && c.Status == v1.ConditionFalse
}

func conditionOf(n *v1.Node, t v1.NodeConditionType) *v1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == t {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

// conditionReason and conditionMessage are flanneld's.
const (
	conditionReason  = "FlannelIsUp"
	conditionMessage = "Flannel is running on this node"
)

// setNetworkAvailable patches the node's NetworkUnavailable condition to
// False with flanneld's reason and message.
func (s *Store) setNetworkAvailable(ctx context.Context) error {
	now := metav1.Now()
	raw, err := json.Marshal([]v1.NodeCondition{{
		Type:               v1.NodeNetworkUnavailable,
		Status:             v1.ConditionFalse,
		Reason:             conditionReason,
		Message:            conditionMessage,
		LastTransitionTime: now,
		LastHeartbeatTime:  now,
	}})
	if err != nil {
		return err
	}
	return s.patchStatus(ctx, fmt.Appendf(nil, `{"status":{"conditions":%s}}`, raw))
}
