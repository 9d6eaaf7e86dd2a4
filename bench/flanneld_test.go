//go:build linux

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flannelu/flannelu/testbed"
)

// TestFlanneldSetup builds the flanneld-udp testbed (about 5 s as root):
// flanneld v0.20.2 itself runs on each host, each host's lease is in the
// testbed's etcd and its subnet.env written, the pods reach each other
// (setupPath pings both ways), and teardown leaves no flanneld behind
// although flanneld panics on SIGTERM.
func TestFlanneldSetup(t *testing.T) {
	s := setUp(t, flanneldPath, "-flanneld", flanneldForTest(t))
	if len(s.nodes) != 2 {
		t.Fatalf("%d nodes, want 2", len(s.nodes))
	}
	var pids []string
	for i, n := range s.nodes {
		var exes []string
		for _, pid := range namespacePIDs(t, n.Host.NS) {
			exe, _ := os.Readlink("/proc/" + pid + "/exe")
			exes = append(exes, exe)
			pids = append(pids, pid)
		}
		if !strings.Contains(strings.Join(exes, " "), filepath.Base(flanneldBin)) {
			t.Errorf("host %d runs %v, no flanneld", i, exes)
		}
		if n.Env.MTU != floorMTU || n.Env.Network.String() != overlayNetwork || n.Env.Subnet.Bits() != 24 {
			t.Errorf("host %d subnet.env: %+v", i, n.Env)
		}
	}
	release(s.tb)
	for _, pid := range pids {
		if _, err := os.Stat("/proc/" + pid); err == nil {
			t.Errorf("process %s still runs after teardown", pid)
		}
	}
}

// TestFlanneldMissedPeerRestarted: a flanneld that has not logged the
// other host's lease (here: its log emptied, as if its watch had missed
// the lease) is restarted by ensureFlanneldPeers, comes back with its own
// lease, learns the peer and carries the pods' traffic again.
func TestFlanneldMissedPeerRestarted(t *testing.T) {
	s := setUp(t, flanneldPath, "-flanneld", flanneldForTest(t))
	c := s.tb.(*testbed.Cluster)
	old := c.Nodes[1]
	if err := os.Truncate(old.Proc.Log, 0); err != nil {
		t.Fatal(err)
	}
	defer func(w time.Duration) { peerWait = w }(peerWait)
	peerWait = 2 * time.Second
	if err := ensureFlanneldPeers(c); err != nil {
		t.Fatal(err)
	}
	if c.Nodes[1] == old || !old.Proc.Exited() {
		t.Fatal("host 1's flanneld was not restarted")
	}
	if c.Nodes[1].Env.Subnet != old.Env.Subnet {
		t.Errorf("host 1 came back with %v, had %v", c.Nodes[1].Env.Subnet, old.Env.Subnet)
	}
	if out, err := testbed.Ping(s.src.NS, s.dst.Addr.String(), 3); err != nil {
		t.Errorf("pod 1 no longer reaches pod 2 after the restart: %v\n%s", err, out)
	}
}

// namespacePIDs lists the processes in a namespace.
func namespacePIDs(t *testing.T, ns testbed.NS) []string {
	t.Helper()
	out, err := ns.Run("ip", "netns", "pids", ns.Name)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(out)
}
