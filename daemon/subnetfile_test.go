package daemon

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flannelu/flannelu/internal/metrics"
	"github.com/flannelu/flannelu/subnet"
)

// A subnet.env that cannot be written (here its directory is a file)
// leaves the daemon running but unready, counts each failure, logs once,
// and is written by the retry once the obstacle is gone.
func TestSubnetFileRetries(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "flannel")
	if err := os.WriteFile(dir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	reg := metrics.NewRegistry()
	env := subnet.Env{Network: netip.MustParsePrefix("198.18.0.0/16"), Subnet: netip.MustParsePrefix("198.18.40.0/24"), MTU: 1472}
	f := newSubnetFile(filepath.Join(dir, "subnet.env"), env, reg, slog.New(slog.NewTextHandler(&log, nil)))
	r := newReadiness(nil)
	r.set(condSubnetEnv, "written", f.Err)
	r.set(condRules, "in place", func() error { return nil })
	r.backend.Store(backendRunning)
	if code, body := readyz(r); code != http.StatusServiceUnavailable || !strings.Contains(body, "subnet file: not written yet") {
		t.Fatalf("before the first write: %d %q", code, body)
	}
	if f.write() {
		t.Fatal("write under a file succeeded")
	}
	code, body := readyz(r)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "subnet file: subnet.env: mkdir "+dir+": not a directory (failing for 0s)\n") {
		t.Fatalf("after a failed write: %d %q", code, body)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { f.keep(ctx); close(done) }()
	for deadline := time.Now().Add(10 * time.Second); f.failures.Value() < 3; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) { // the retry fails again...
			t.Fatalf("%d failed writes in 10 s, want 3 (a retry every second)", f.failures.Value())
		}
	}
	if err := os.Remove(dir); err != nil { // ...until the obstacle is gone
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the retry did not write the file within 10 s of the directory becoming possible")
	}
	if back, err := subnet.ReadEnv(filepath.Join(dir, "subnet.env")); err != nil || back != env {
		t.Fatalf("written file: %+v, %v", back, err)
	}
	if code, body := readyz(r); code != http.StatusOK || body != "lease: held\nstore: reachable\nsubnet file: written\nrules: in place\nbackend: running\n" {
		t.Fatalf("once written: %d %q", code, body)
	}
	var scrape bytes.Buffer
	reg.WriteTo(&scrape) //nolint:errcheck // a buffer
	if want := "flannelu_subnet_file_write_failures_total " + strconv.FormatUint(f.failures.Value(), 10); !strings.Contains(scrape.String(), want+"\n") {
		t.Fatalf("/metrics lacks %q:\n%s", want, scrape.String())
	}
	// One line when it starts failing, one when the file lands; none per retry.
	lines := strings.Split(strings.TrimSpace(log.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `level=ERROR msg="cannot write the subnet file;`) ||
		!strings.Contains(lines[1], `level=INFO msg="wrote subnet file"`) || !strings.Contains(lines[1], "after=") {
		t.Fatalf("log:\n%s", log.String())
	}
}
