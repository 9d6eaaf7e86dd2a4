package kube

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flannelu/flannelu/testbed"
)

func managed(publicIP string) map[string]string {
	return map[string]string{ann.SubnetKubeManaged: "true", ann.BackendType: "host-gw", ann.BackendData: "null", ann.PublicIP: publicIP}
}

// expectOnly reads the next batch and checks it is exactly want (as
// describe prints it): a change that should cause no event is followed by
// one that does, so an extra event shows up here instead of being waited
// for.
func (w *recorder) expectOnly(t *testing.T, what, want string) {
	t.Helper()
	if got := describe(w.next(t, what)); got != want {
		t.Errorf("after %s: events %q, want %q", what, got, want)
	}
}

// TestWatchLeasesReportsWhatChanged: only nodes annotated
// kube-subnet-manager=true are leases; backend data, type or public IP
// changes are EventChanged, anything else no event; a malformed lease is a
// counted skip, and a valid one overwritten with garbage stays.
func TestWatchLeasesReportsWhatChanged(t *testing.T) {
	e := sharedEnv(t)
	n1 := e.createNode(t, nodeName(t, "1"), managed("192.0.2.61"), "198.18.61.0/24")
	n2 := e.createNode(t, nodeName(t, "2"), managed("192.0.2.62"), "198.18.62.0/24")
	e.createNode(t, nodeName(t, "3"), nil, "198.18.63.0/24") // no flannel on it
	n4 := e.createNode(t, nodeName(t, "4"), managed("192.0.2.300"), "198.18.64.0/24")

	s, logs := e.newStore(t, testbed.FlannelUser, nodeName(t, "observer"))
	mustConfig(t, s)
	w := record(t, s)
	w.expectOnly(t, "the synced list", "added 198.18.61.0/24 192.0.2.61, added 198.18.62.0/24 192.0.2.62")
	if got := s.MalformedLeases(); got != 1 {
		t.Errorf("MalformedLeases = %d, want 1 (node 4's public-ip)", got)
	}
	if !strings.Contains(logs.String(), `msg="skipping malformed node lease" node=`+n4.Name) {
		t.Errorf("no warning about node 4:\n%s", logs)
	}

	e.patchNode(t, n1.Name, `{"metadata":{"labels":{"example.com/rack":"r1"},"annotations":{"example.com/note":"x"}}}`)
	e.patchNode(t, n2.Name, `{"metadata":{"annotations":{"flannel.alpha.coreos.com/backend-type":"vxlan","flannel.alpha.coreos.com/backend-data":"{\"VNI\":1,\"VtepMAC\":\"02:00:00:00:00:62\"}"}}}`)
	w.expectOnly(t, "node 2's backend changed (node 1's labels did not matter)", "changed 198.18.62.0/24 192.0.2.62")

	n5 := e.createNode(t, nodeName(t, "5"), managed("192.0.2.65"), "198.18.65.0/24")
	w.expectOnly(t, "node 5 registered", "added 198.18.65.0/24 192.0.2.65")
	// A valid lease overwritten with garbage: counted, no event (its last
	// valid value stays, as with etcd) until the node goes.
	e.patchNode(t, n5.Name, `{"metadata":{"annotations":{"flannel.alpha.coreos.com/public-ip":"bogus"}}}`)
	e.patchNode(t, n1.Name, `{"metadata":{"annotations":{"flannel.alpha.coreos.com/kube-subnet-manager":null}}}`)
	w.expectOnly(t, "node 5 overwritten with garbage, node 1 lost kube-subnet-manager", "removed 198.18.61.0/24 192.0.2.61")
	if got := s.MalformedLeases(); got != 2 {
		t.Errorf("MalformedLeases = %d, want 2 (node 4, then node 5's garbage)", got)
	}
	if err := e.deleteNode(n5.Name); err != nil {
		t.Fatal(err)
	}
	w.expectOnly(t, "node 5 deleted", "removed 198.18.65.0/24 192.0.2.65")

	if err := e.deleteNode(n2.Name); err != nil {
		t.Fatal(err)
	}
	w.expectOnly(t, "node 2 deleted", "removed 198.18.62.0/24 192.0.2.62")

	e.patchNode(t, n4.Name, `{"metadata":{"annotations":{"flannel.alpha.coreos.com/public-ip":"192.0.2.64"}}}`)
	w.expectOnly(t, "node 4's public-ip fixed", "added 198.18.64.0/24 192.0.2.64")
	if got := s.MalformedLeases(); got != 2 {
		t.Errorf("MalformedLeases = %d at the end, want still 2", got)
	}
}

// TestAPIServerRestartAndWatchExpiryLoseNothing stops the API server the
// store talks to, changes the nodes through a second API server on the
// same etcd meanwhile, compacts etcd (so the watch cannot resume: 410
// Gone), and starts the first again: the store reports exactly the
// changes it missed, once, and keeps its own lease throughout.
func TestAPIServerRestartAndWatchExpiryLoseNothing(t *testing.T) {
	testbed.RequireRoot(t)
	e, err := startEnv("kube-rs", 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	other, err := e.Bed.StartKubeAPIServer(e.Bed.Hosts[1], e.Etcd)
	if err != nil {
		t.Fatal(err)
	}
	a := e.createNode(t, "node-a", managed("192.0.2.71"), "198.18.71.0/24")
	b := e.createNode(t, "node-b", managed("192.0.2.72"), "198.18.72.0/24")
	s, logs, cfg, l := e.leased(t, "node-own", "198.18.70.0/24")
	kept := make(chan error, 1)
	keepCtx, stopKeep := context.WithCancel(context.Background())
	go func() { kept <- s.KeepLease(keepCtx, cfg, l) }()
	w := record(t, s)
	w.expectOnly(t, "the synced list", "added 198.18.70.0/24 192.0.2.11, added 198.18.71.0/24 192.0.2.71, added 198.18.72.0/24 192.0.2.72")
	relists := s.Relists()

	stopping := time.Now()
	if err := e.KubeAPI.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("API server stopped in %v", time.Since(stopping).Round(time.Millisecond))
	admin2, err := other.Clientset(testbed.AdminUser)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t, time.Minute)
	if err := admin2.CoreV1().Nodes().Delete(ctx, b.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c := node("node-c", managed("192.0.2.73"), "198.18.73.0/24")
	if _, err := admin2.CoreV1().Nodes().Create(ctx, c, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	d := node("node-d", managed("192.0.2.74"), "198.18.74.0/24") // comes and goes unseen
	if _, err := admin2.CoreV1().Nodes().Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := admin2.CoreV1().Nodes().Delete(ctx, d.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin2.CoreV1().Nodes().Patch(ctx, a.Name, "application/merge-patch+json",
		[]byte(`{"metadata":{"annotations":{"flannel.alpha.coreos.com/public-ip":"192.0.2.81"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	compactEtcd(t, e.Etcd)

	restart := time.Now()
	if err := e.KubeAPI.Start(); err != nil {
		t.Fatal(err)
	}
	ready := time.Since(restart)
	got := describe(w.collect(t, 3, "the changes made while the API server was down"))
	if want := "added 198.18.73.0/24 192.0.2.73, changed 198.18.71.0/24 192.0.2.81, removed 198.18.72.0/24 192.0.2.72"; got != want {
		t.Errorf("after the restart: events %q, want %q", got, want)
	}
	t.Logf("API server restart: ready after %v, the store caught up %v after the start", ready.Round(time.Millisecond), time.Since(restart).Round(time.Millisecond))
	if s.Relists() <= relists {
		t.Errorf("the informer did not list the nodes again (relists %d -> %d): the watch resumed, so this test did not exercise expiry", relists, s.Relists())
	}
	// Nothing else is pending: the next event is the next change.
	e.createNode(t, "node-e", managed("192.0.2.75"), "198.18.75.0/24")
	w.expectOnly(t, "node e registered after the restart", "added 198.18.75.0/24 192.0.2.75")

	select {
	case err := <-kept:
		t.Fatalf("KeepLease ended across the restart: %v", err)
	default:
	}
	stopKeep()
	if err := <-kept; err != nil {
		t.Errorf("KeepLease: %v", err)
	}
	if t.Failed() {
		t.Logf("store log:\n%s", logs)
	}
}

// compactEtcd compacts etcd up to its current revision: every older
// resourceVersion is gone, as after the API server's periodic compaction.
func compactEtcd(t *testing.T, etcd *testbed.Etcd) {
	t.Helper()
	cli, err := etcd.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := ctxFor(t, 30*time.Second)
	resp, err := cli.Put(ctx, "/fu-test/compact", "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
}
