package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/flannelu/flannelu/testbed"
)

var helperResult = regexp.MustCompile(`bytes=(\d+) sha256=([0-9a-f]{64})`)

// listening is the receiver's line once its socket listens.
var listening = regexp.MustCompile(`(?m)^listening$`)

// transfer sends size bytes over TCP from one pod to another and checks
// that exactly the bytes sent arrived, by count and SHA-256.
func transfer(t *testing.T, bed *testbed.Bed, from, to *testbed.Pod, size int64) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	addr := testbed.ListenAddr(to.Addr, 5201)
	// A log per address: a pod may receive once per family, and the wait
	// below must not find the first receiver's "listening".
	recv, err := bed.Start(to.NS, "recv-"+to.Name+"-"+to.Addr.String(), "env", "FLANNELU_E2E_HELPER=recv", self, addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := recv.WaitLog(listening, 30*time.Second); err != nil {
		t.Fatalf("receiver in %s: %v", to.Name, err)
	}
	start := time.Now()
	out, err := from.Run("env", "FLANNELU_E2E_HELPER=send", self, fmt.Sprintf("%d@%s", size, addr))
	if err != nil {
		t.Fatalf("sender: %v", err)
	}
	elapsed := time.Since(start)
	if exited, err := recv.Wait(30 * time.Second); !exited || err != nil {
		t.Fatalf("receiver did not finish (exited=%v): %v %s", exited, err, testbed.Tail(recv.Log, 5))
	}
	b, _ := os.ReadFile(recv.Log)
	sent, got := helperResult.FindStringSubmatch(out), helperResult.FindStringSubmatch(string(b))
	if sent == nil || got == nil {
		t.Fatalf("no result line: sender %q receiver %q", out, b)
	}
	if sent[1] != fmt.Sprint(size) || got[1] != sent[1] || got[2] != sent[2] {
		t.Fatalf("TCP transfer corrupted: sent %s bytes sha256 %s, received %s bytes sha256 %s", sent[1], sent[2], got[1], got[2])
	}
	t.Logf("TCP %d MB %s -> %s: byte for byte, %.0f Mbit/s", size>>20, from.Addr, to.Addr,
		float64(size*8)/elapsed.Seconds()/1e6)
}

// fullMesh proves that every pod reaches every other pod without loss.
// Peers learn of each other through the etcd watch a moment after they
// start, so it first waits until each pair has answered once; the
// lossless run then measures a path known to be up. pods may list a pod
// once per family (each copy addressed by one family's address): each
// pod's namespace pings each address of the other pods once.
func fullMesh(t *testing.T, pods []*testbed.Pod) {
	t.Helper()
	type pair struct {
		from *testbed.Pod
		to   netip.Addr
	}
	var pairs []pair
	seen := map[string]bool{}
	for _, a := range pods {
		if seen[a.Name] {
			continue
		}
		seen[a.Name] = true
		for _, b := range pods {
			if b.Name != a.Name {
				pairs = append(pairs, pair{a, b.Addr})
			}
		}
	}
	for _, p := range pairs {
		waitPing(t, p.from, p.to)
	}
	for _, p := range pairs {
		if out, err := testbed.Ping(p.from.NS, p.to.String(), 3); err != nil {
			t.Errorf("ping %s -> %s: %v\n%s", p.from.Addr, p.to, err, out)
		}
	}
}

// waitPing waits until from reaches to: peers learn of each other through
// the etcd watch, a moment after they start.
func waitPing(t *testing.T, from *testbed.Pod, to netip.Addr) {
	t.Helper()
	if err := testbed.Eventually(30*time.Second, func() error {
		_, err := testbed.Ping(from.NS, to.String(), 1)
		return err
	}); err != nil {
		t.Fatalf("%s never reached %s: %v", from.Addr, to, err)
	}
}

// allPods lists the pods of the given nodes.
func allPods(c *testbed.Cluster, hosts ...int) []*testbed.Pod {
	var pods []*testbed.Pod
	for _, i := range hosts {
		pods = append(pods, c.Hosts[i-1].Pods...)
	}
	return pods
}
