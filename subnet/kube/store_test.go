package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flannelu/flannelu/subnet"
	"github.com/flannelu/flannelu/testbed"
)

var vxlanAttrs = subnet.LeaseAttrs{
	PublicIP:    netip.MustParseAddr("192.0.2.11"),
	BackendType: "vxlan",
	BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"02:00:00:00:00:0b"}`),
}

// TestFlannelsClusterRoleIsEnough runs the store as the flannel service
// account, whose only permissions are flannel's ClusterRole from
// deploy/kube-flannelu.yml: it finds its node through its pod, publishes
// its lease exactly as flanneld writes it, sets NetworkUnavailable=False
// and watches the peers.
func TestFlannelsClusterRoleIsEnough(t *testing.T) {
	e := sharedEnv(t)
	name := nodeName(t, "a")
	e.createNode(t, name, nil, "198.18.11.0/24")
	peer := e.createNode(t, nodeName(t, "peer"), map[string]string{
		ann.SubnetKubeManaged: "true", ann.BackendType: "vxlan", ann.PublicIP: "192.0.2.12",
		ann.BackendData: `{"VNI":1,"VtepMAC":"02:00:00:00:00:0c"}`}, "198.18.12.0/24")

	// The DaemonSet's pod: flannelu learns its node from spec.nodeName.
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-pod", Namespace: "kube-flannel"},
		Spec: v1.PodSpec{NodeName: name, ServiceAccountName: "flannel", HostNetwork: true,
			Containers: []v1.Container{{Name: "kube-flannel", Image: "flannelu:dev"}}},
	}
	if _, err := e.KubeAdmin.CoreV1().Pods("kube-flannel").Create(ctxFor(t, 30*time.Second), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	client, err := NewClient(e.KubeAPI.RESTConfig(testbed.FlannelUser), nil)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"POD_NAME": pod.Name, "POD_NAMESPACE": "kube-flannel"}
	got, err := NodeName(ctxFor(t, 30*time.Second), client, func(k string) string { return env[k] })
	if err != nil || got != name {
		t.Fatalf("NodeName from the pod = %q, %v; want %q", got, err, name)
	}

	s, _ := e.newStore(t, testbed.FlannelUser, name)
	cfg := mustConfig(t, s)
	l, err := s.AcquireLease(ctxFor(t, time.Minute), cfg, vxlanAttrs, netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	if l.Subnet.String() != "198.18.11.0/24" || !l.Attrs.Equal(vxlanAttrs) || time.Until(l.Expiration) < 23*time.Hour {
		t.Fatalf("lease %+v, want 198.18.11.0/24 with the attributes given and 24 h expiry", l)
	}
	n := e.getNode(t, name)
	want := map[string]string{
		"flannel.alpha.coreos.com/kube-subnet-manager": "true",
		"flannel.alpha.coreos.com/backend-type":        "vxlan",
		"flannel.alpha.coreos.com/backend-data":        `{"VNI":1,"VtepMAC":"02:00:00:00:00:0b"}`,
		"flannel.alpha.coreos.com/public-ip":           "192.0.2.11",
	}
	if !equalMaps(n.Annotations, want) {
		t.Errorf("node annotations %v\nwant exactly %v", n.Annotations, want)
	}

	keepCtx, stopKeep := context.WithCancel(context.Background())
	kept := make(chan error, 1)
	go func() { kept <- s.KeepLease(keepCtx, cfg, l) }()
	if err := testbed.Eventually(30*time.Second, func() error { return flannelIsUp(e.getNode(t, name)) }); err != nil {
		t.Error(err)
	}

	w := record(t, s)
	first := w.next(t, "the synced list")
	if !sameLeases(first, subnet.EventAdded, "198.18.11.0/24", "198.18.12.0/24") {
		t.Errorf("first batch %v, want own and the peer's lease added", first)
	}
	e.patchNode(t, peer.Name, `{"metadata":{"annotations":{"flannel.alpha.coreos.com/public-ip":"192.0.2.13"}}}`)
	if evs := w.next(t, "the peer's new public IP"); !sameLeases(evs, subnet.EventChanged, "198.18.12.0/24") || evs[0].Lease.Attrs.PublicIP.String() != "192.0.2.13" {
		t.Errorf("after the peer's public IP changed: %v", evs)
	}
	stopKeep()
	if err := <-kept; err != nil {
		t.Errorf("KeepLease after its context ended: %v, want nil", err)
	}
}

// leased registers node name with podCIDR and returns a store, as the
// flannel service account, that took its lease with vxlanAttrs.
func (e *env) leased(t *testing.T, name, podCIDR string) (*Store, *storeLog, *subnet.Config, subnet.Lease) {
	t.Helper()
	e.createNode(t, name, nil, podCIDR)
	s, logs := e.newStore(t, testbed.FlannelUser, name)
	cfg := mustConfig(t, s)
	l, err := s.AcquireLease(ctxFor(t, time.Minute), cfg, vxlanAttrs, netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	return s, logs, cfg, l
}

func flannelIsUp(n *v1.Node) error {
	for _, c := range n.Status.Conditions {
		if c.Type == v1.NodeNetworkUnavailable {
			if c.Status != v1.ConditionFalse || c.Reason != "FlannelIsUp" || c.Message != "Flannel is running on this node" {
				return fmt.Errorf("condition %+v, want False, FlannelIsUp, flanneld's message", c)
			}
			return nil
		}
	}
	return fmt.Errorf("node %s has no NetworkUnavailable condition: %+v", n.Name, n.Status.Conditions)
}

// TestNoPodCIDRWaitsForOne starts the store before its node is registered,
// then registers it without a podCIDR (kube-controller-manager without
// --allocate-node-cidrs), then assigns one: each wait is one clear log
// line, and the lease is taken as soon as the podCIDR is there.
func TestNoPodCIDRWaitsForOne(t *testing.T) {
	e := sharedEnv(t)
	name := nodeName(t, "a")
	s, logs := e.newStore(t, testbed.FlannelUser, name)
	cfg := mustConfig(t, s)
	type result struct {
		l   subnet.Lease
		err error
	}
	done := make(chan result, 1)
	go func() {
		l, err := s.AcquireLease(ctxFor(t, 2*time.Minute), cfg, vxlanAttrs, netip.Prefix{})
		done <- result{l, err}
	}()
	logs.wait(t, waitNode, regexp.MustCompile(`level=WARN msg="node not found in the API server.*" node=`+name))
	e.createNode(t, name, nil)
	logs.wait(t, waitPodCIDR, regexp.MustCompile(`level=WARN msg="node has no podCIDR yet: waiting for one. Fix: run kube-controller-manager with --allocate-node-cidrs=true and --cluster-cidr set to net-conf.json's Network, or set the node's spec.podCIDR" node=`+name))
	// An unrelated change to the node: no second line, no lease.
	e.patchNode(t, name, `{"metadata":{"labels":{"example.com/zone":"a"}}}`)
	e.patchNode(t, name, `{"spec":{"podCIDR":"198.18.21.0/24","podCIDRs":["198.18.21.0/24"]}}`)
	select {
	case r := <-done:
		if r.err != nil || r.l.Subnet.String() != "198.18.21.0/24" {
			t.Fatalf("lease %v, %v; want 198.18.21.0/24", r.l.Subnet, r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no lease 30 s after the podCIDR was set; log:\n%s", logs)
	}
	if a, c := logs.Count(waitNode), logs.Count(waitPodCIDR); a != 1 || c != 1 {
		t.Errorf("logged 'not found' %d times and 'no podCIDR' %d times, want once each:\n%s", a, c, logs)
	}
	if got := e.getNode(t, name).Annotations[ann.PublicIP]; got != "192.0.2.11" {
		t.Errorf("public-ip annotation %q after the lease was taken", got)
	}
}

// TestPodCIDROutsideTheNetworkIsAnError: a podCIDR the net-conf.json
// network does not contain can never work; say which and why.
func TestPodCIDROutsideTheNetworkIsAnError(t *testing.T) {
	e := sharedEnv(t)
	name := nodeName(t, "a")
	e.createNode(t, name, nil, "203.0.113.0/24")
	s, _ := e.newStore(t, testbed.FlannelUser, name)
	_, err := s.AcquireLease(ctxFor(t, time.Minute), mustConfig(t, s), vxlanAttrs, netip.Prefix{})
	if err == nil || !strings.Contains(err.Error(), "podCIDR 203.0.113.0/24 is not inside net-conf.json's Network 198.18.0.0/16") {
		t.Fatalf("error %v", err)
	}
}

// TestPatchRefusedByRBACNamesThePermission runs the store as a user who
// may read nodes but not patch nodes/status.
func TestPatchRefusedByRBACNamesThePermission(t *testing.T) {
	e := sharedEnv(t)
	name := nodeName(t, "a")
	e.createNode(t, name, nil, "198.18.31.0/24")
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "fu-read-nodes"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}}},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "fu-read-nodes"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: testbed.LimitedUser}},
	}
	ctx := ctxFor(t, time.Minute)
	if _, err := e.KubeAdmin.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.KubeAdmin.RbacV1().ClusterRoles().Delete(context.Background(), role.Name, metav1.DeleteOptions{})
	})
	if _, err := e.KubeAdmin.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.KubeAdmin.RbacV1().ClusterRoleBindings().Delete(context.Background(), binding.Name, metav1.DeleteOptions{})
	})
	s, _ := e.newStore(t, testbed.LimitedUser, name)
	_, err := s.AcquireLease(ctx, mustConfig(t, s), vxlanAttrs, netip.Prefix{})
	if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), `missing permission verb "patch" on resource "nodes" subresource "status" (nodes/status)`) {
		t.Fatalf("error %v, want ErrForbidden naming patch on nodes/status", err)
	}
	t.Logf("the error a user sees: %v", err)
}

// TestAnnotationsOverwrittenByHandAreRestored: KeepLease puts back what
// someone changed or removed, and leaves the user's other annotations.
func TestAnnotationsOverwrittenByHandAreRestored(t *testing.T) {
	e := sharedEnv(t)
	name := nodeName(t, "a")
	s, logs, cfg, l := e.leased(t, name, "198.18.41.0/24")
	go s.KeepLease(ctxFor(t, 2*time.Minute), cfg, l) //nolint:errcheck // checked through the node's state
	before := e.getNode(t, name).Annotations
	e.patchNode(t, name, `{"metadata":{"annotations":{"flannel.alpha.coreos.com/public-ip":"192.0.2.99","flannel.alpha.coreos.com/backend-type":null,"example.com/owner":"ops"}}}`)
	if err := testbed.Eventually(30*time.Second, func() error {
		got := e.getNode(t, name).Annotations
		for k, v := range before {
			if got[k] != v {
				return fmt.Errorf("%s = %q, want %q restored", k, got[k], v)
			}
		}
		if got["example.com/owner"] != "ops" {
			return errors.New("the user's own annotation was removed")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	logs.wait(t, "the node's flannel annotations were changed by someone else: restoring them", regexp.MustCompile(
		`node=`+name+` annotations="\[flannel.alpha.coreos.com/backend-type flannel.alpha.coreos.com/public-ip\]"`))
}

// TestDeletedNodeLosesTheLease: KeepLease ends with ErrLeaseLost when the
// node goes away.
func TestDeletedNodeLosesTheLease(t *testing.T) {
	e := sharedEnv(t)
	name := nodeName(t, "a")
	s, _, cfg, l := e.leased(t, name, "198.18.51.0/24")
	kept := make(chan error, 1)
	go func() { kept <- s.KeepLease(ctxFor(t, 2*time.Minute), cfg, l) }()
	if err := testbed.Eventually(30*time.Second, func() error { return flannelIsUp(e.getNode(t, name)) }); err != nil {
		t.Fatal(err)
	}
	if err := e.deleteNode(name); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-kept:
		if !errors.Is(err, ErrLeaseLost) || !strings.Contains(err.Error(), "was deleted") {
			t.Fatalf("KeepLease: %v, want ErrLeaseLost saying the node was deleted", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("KeepLease still running 30 s after its node was deleted")
	}
}

func TestGetConfig(t *testing.T) {
	e := sharedEnv(t)
	s, _ := e.newStore(t, testbed.FlannelUser, "any")
	cfg := mustConfig(t, s)
	if cfg.Network.String() != "198.18.0.0/16" || cfg.BackendType != "vxlan" {
		t.Fatalf("config %+v", cfg)
	}
	s.netConf += ".missing"
	if _, err := s.GetConfig(context.Background()); !errors.Is(err, subnet.ErrNoConfig) || !strings.Contains(err.Error(), "--net-config-path") {
		t.Fatalf("missing file: %v", err)
	}
}

// recorder records WatchLeases' batches.
type recorder struct {
	batches chan []subnet.Event
}

func record(t *testing.T, s *Store) *recorder {
	w := &recorder{batches: make(chan []subnet.Event, 100)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.WatchLeases(ctx, func(evs []subnet.Event) { w.batches <- evs }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("WatchLeases: %v", err)
		}
	})
	return w
}

func (w *recorder) next(t *testing.T, what string) []subnet.Event {
	t.Helper()
	select {
	case evs := <-w.batches:
		return evs
	case <-time.After(30 * time.Second):
		t.Fatalf("no events for %s within 30 s", what)
		return nil
	}
}

// collect gathers batches until n events arrived.
func (w *recorder) collect(t *testing.T, n int, what string) []subnet.Event {
	t.Helper()
	var all []subnet.Event
	for len(all) < n {
		all = append(all, w.next(t, what)...)
	}
	return all
}

// sameLeases reports whether evs are exactly events of type typ for the
// given subnets, in any order.
func sameLeases(evs []subnet.Event, typ subnet.EventType, subnets ...string) bool {
	var got []string
	for _, ev := range evs {
		if ev.Type != typ {
			return false
		}
		got = append(got, ev.Lease.Subnet.String())
	}
	slices.Sort(got)
	slices.Sort(subnets)
	return slices.Equal(got, subnets)
}

func describe(evs []subnet.Event) string {
	var s []string
	for _, ev := range evs {
		s = append(s, fmt.Sprintf("%s %s %s", ev.Type, ev.Lease.Subnet, ev.Lease.Attrs.PublicIP))
	}
	slices.Sort(s)
	return strings.Join(s, ", ")
}
