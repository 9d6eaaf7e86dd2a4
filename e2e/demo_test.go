package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flannelu/flannelu/testbed"
)

// demoTimeout bounds one run of the demo (about 20 s with etcd, 30 s with
// the API server on an idle two-core machine).
const demoTimeout = 3 * time.Minute

// TestDemo runs cmd/demo as a user would, once per store, with a short
// iperf3: it must end successfully, show the cluster (in Kubernetes mode
// the Node objects with their podCIDRs, flannel's annotations and the
// FlannelIsUp condition), and leave no namespace behind.
func TestDemo(t *testing.T) {
	testbed.RequireRoot(t)
	t.Parallel()
	demoRuns.Lock()
	defer demoRuns.Unlock()
	root := repoRoot(t)
	demo := buildDemo(t)
	for _, tc := range []struct {
		store string
		want  []string
	}{
		{"etcd", []string{`/coreos.com/network/subnets/198.18.`, `{"PublicIP":"192.0.2.`}},
		{"kube", []string{"podCIDRs [198.18.3.0/24]", `flannel.alpha.coreos.com/kube-subnet-manager: "true"`,
			`flannel.alpha.coreos.com/public-ip: "192.0.2.3"`}},
	} {
		t.Run(tc.store, func(t *testing.T) {
			out, pid := runDemo(t, root, demo, "-store", tc.store, "-flannelu", flannelu, "-iperf-seconds", "1")
			for _, want := range append(tc.want, "0% packet loss", " receiver", "The demo worked") {
				if !strings.Contains(out, want) {
					t.Errorf("the demo's output lacks %q:\n%s", want, out)
				}
			}
			if up := strings.Count(out, "condition NetworkUnavailable=False (FlannelIsUp)"); tc.store == "kube" && up != 3 {
				t.Errorf("the demo shows %d nodes with flanneld's NetworkUnavailable condition, want 3:\n%s", up, out)
			}
			ns, _ := exec.Command("ip", "netns", "list").Output()
			if prefix := testbed.Prefix + strconv.Itoa(pid) + "-"; strings.Contains(string(ns), prefix) {
				t.Errorf("the demo left namespaces %s* behind:\n%s", prefix, ns)
			}
		})
	}
}

// demoRuns keeps TestDemo's runs and TestDemoInterrupted's apart: every
// demo run sweeps what killed runs left, and TestDemoInterrupted's next
// run must find the leftovers of the run it killed.
var demoRuns sync.Mutex

// runDemo runs the demo binary from the repository root until it ends
// (interrupted, so that it cleans up, after demoTimeout) and returns its
// output and process id; a failed run fails t.
func runDemo(t *testing.T, root, demo string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), demoTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, demo, args...)
	cmd.Dir = root
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = time.Minute // its teardown after the interrupt
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo %s: %v after %v:\n%s", strings.Join(args, " "), err, time.Since(start).Round(time.Second), out)
	}
	t.Logf("demo %s: %v", strings.Join(args, " "), time.Since(start).Round(100*time.Millisecond))
	return string(out), cmd.Process.Pid
}

// repoRoot is the repository's root, where the demo runs (as make demo
// runs it).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// buildDemo builds cmd/demo into the test's temporary directory.
func buildDemo(t *testing.T) string {
	t.Helper()
	demo := filepath.Join(t.TempDir(), "demo")
	if out, err := exec.Command("go", "build", "-o", demo, "github.com/flannelu/flannelu/cmd/demo").CombinedOutput(); err != nil {
		t.Fatalf("build cmd/demo: %v\n%s", err, out)
	}
	return demo
}
