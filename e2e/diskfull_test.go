package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flannelu/flannelu/testbed"
)

// TestSubnetFileDiskFull is issue 22's first case as the probe ran it: a
// 16 KiB tmpfs holds the subnet file; flannelu starts once (a good file),
// stops, the tmpfs is filled, flannelu starts again. The second start
// must keep the good file whole (it was replaced by an empty one, the log
// said "wrote subnet file" and /readyz answered 200), say so in the log,
// answer /readyz 503 and count the failures while running on; once space
// is freed, the retry writes the file and /readyz turns 200.
func TestSubnetFileDiskFull(t *testing.T) {
	testbed.RequireRoot(t)
	t.Parallel()
	dir := testbed.Tmpfs(t, "16k") // before the cluster: unmounted after flannelu stopped
	c := newCluster(t, "e2e-full", 1, udpConfig)
	subnetFile := filepath.Join(dir, "subnet.env")
	launch := func() *testbed.Node {
		t.Helper()
		n, err := c.LaunchNode(1, "--subnet-file", subnetFile)
		if err != nil {
			t.Fatal(err)
		}
		n.SubnetFile = subnetFile
		return n
	}
	n := launch()
	if err := n.WaitEnv(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(subnetFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	fill := testbed.FillDisk(t, dir)
	goodInode := inode(t, subnetFile)
	firstRun, _ := os.ReadFile(n.Proc.Log) // the second run appends to it

	n = launch()
	secondRun := func(b []byte) []byte { return b[min(len(firstRun), len(b)):] }
	attempt := regexp.MustCompile(`msg="(wrote subnet file|cannot write the subnet file;)`)
	if err := n.Proc.WaitOutput(60*time.Second, "a subnet file line", func(b []byte) bool { return attempt.Match(secondRun(b)) }); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(subnetFile); string(got) != string(good) {
		t.Fatalf("on a full disk the subnet file became %q, want the previous %q kept", got, good)
	}
	log, _ := os.ReadFile(n.Proc.Log)
	if !regexp.MustCompile(`level=ERROR msg="cannot write the subnet file;.*no space left on device`).Match(secondRun(log)) {
		t.Fatalf("no error logged for the failed write:%s", testbed.Tail(n.Proc.Log, 10))
	}
	waitMetricAbove(t, n, "flannelu_subnet_file_write_failures_total", 1) // the retry runs
	code, body, err := n.Get("/readyz")
	if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, "subnet file: subnet.env: write ") ||
		!strings.Contains(body, "no space left on device") {
		t.Fatalf("/readyz on a full disk: %d %q, %v; want 503 naming the subnet file's error", code, body, err)
	}
	checkMetrics(t, n, "flannelu_subnet_file_write_failures_total")
	if n.Proc.Exited() {
		t.Fatalf("flannelu exited on a full disk:%s", testbed.Tail(n.Proc.Log, 10))
	}
	if log, _ := os.ReadFile(n.Proc.Log); strings.Contains(string(secondRun(log)), `msg="wrote subnet file"`) {
		t.Fatalf("flannelu claims to have written the subnet file on a full disk:%s", testbed.Tail(n.Proc.Log, 10))
	}

	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	if err := testbed.Eventually(15*time.Second, func() error {
		code, body, err := n.Get("/readyz")
		if err == nil && (code != http.StatusOK || !strings.Contains(body, "subnet file: written")) {
			err = fmt.Errorf("/readyz %d %q", code, body)
		}
		return err
	}); err != nil {
		t.Fatalf("after space was freed: %v", err)
	}
	if got, _ := os.ReadFile(subnetFile); string(got) != string(good) || inode(t, subnetFile) == goodInode {
		t.Fatalf("after space was freed the subnet file is %q (inode %d, was %d), want the same lease rewritten", got, inode(t, subnetFile), goodInode)
	}
	if err := n.Proc.WaitLog(regexp.MustCompile(`level=INFO msg="wrote subnet file" .* after=`), time.Second); err != nil {
		t.Fatal(err)
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Ino
}
