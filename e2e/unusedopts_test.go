package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/flannelu/flannelu/testbed"
)

// TestUnusedOptionsWarned: udp-only options given to a host-gw node are
// named in a warning at start, and the node runs (was: silently ignored,
// issue 22's sixth case).
func TestUnusedOptionsWarned(t *testing.T) {
	testbed.RequireRoot(t)
	t.Parallel()
	c := newCluster(t, "e2e-unused", 1, ipv4.config("host-gw"))
	pcap := filepath.Join(c.Dir, "trace.pcap")
	n := startNode(t, c, 1, "--trace", "--trace-pcap", pcap)
	for _, opt := range []string{"--trace", "--trace-pcap"} {
		re := regexp.MustCompile(`level=WARN msg="option ignored: the network config's backend does not use it" option=` + opt + ` backend=host-gw used_by="\[udp ipip\]"`)
		if err := n.Proc.WaitLog(re, 10*time.Second); err != nil {
			t.Error(err)
		}
	}
	if _, err := os.Stat(pcap); !os.IsNotExist(err) {
		t.Errorf("host-gw wrote a pcap file (%v)", err)
	}
	if n.Proc.Exited() {
		t.Fatalf("flannelu exited:%s", testbed.Tail(n.Proc.Log, 10))
	}
}
