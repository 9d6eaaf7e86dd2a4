//go:build linux

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

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

// namespacePIDs lists the processes in a namespace.
func namespacePIDs(t *testing.T, ns testbed.NS) []string {
	t.Helper()
	out, err := ns.Run("ip", "netns", "pids", ns.Name)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(out)
}
