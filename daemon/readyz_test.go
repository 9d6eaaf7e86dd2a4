package daemon

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/flannelu/flannelu/subnet"
	"github.com/flannelu/flannelu/subnet/etcd"
	"github.com/flannelu/flannelu/testbed/etcdtest"
)

func readyz(r *readiness) (int, string) {
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	return rec.Code, rec.Body.String()
}

// /readyz says which condition is not met: subnet.env and the rules
// before they are in place, the backend before the first peer list, the
// store while etcd does not answer.
func TestReadyz(t *testing.T) {
	srv := etcdtest.Start(t)
	mgr := etcd.NewManager(srv.Client(), etcd.Options{Logger: discardLogger(), RequestTimeout: 500 * time.Millisecond})
	r := newReadiness(mgr)
	if code, body := readyz(r); code != http.StatusServiceUnavailable ||
		body != "lease: held\nstore: reachable\nsubnet file: not written yet\nrules: not set up yet\nbackend: waiting for the first list of peers\n" {
		t.Fatalf("at start: %d %q", code, body)
	}
	r.set(condSubnetEnv, "written", func() error { return nil })
	rulesErr := errors.New("iptables: exit status 4")
	r.set(condRules, "in place", func() error { return rulesErr })
	r.backend.Store(backendRunning)
	if code, body := readyz(r); code != http.StatusServiceUnavailable || !strings.Contains(body, "rules: iptables: exit status 4\n") {
		t.Fatalf("rules failed: %d %q", code, body)
	}
	rulesErr = nil
	if code, body := readyz(r); code != http.StatusOK || body != "lease: held\nstore: reachable\nsubnet file: written\nrules: in place\nbackend: running\n" {
		t.Fatalf("all ready: %d %q", code, body)
	}
	srv.Stop()
	mgr.GetConfig(context.Background()) //nolint:errcheck // fails: that is the point
	code, body := readyz(r)
	if want := "store: etcd (" + srv.Endpoints()[0] + ") unreachable for"; code != http.StatusServiceUnavailable || !strings.Contains(body, want) {
		t.Fatalf("etcd stopped: %d %q, want 503 with %q", code, body, want)
	}
	srv.Restart()
	if _, err := mgr.GetConfig(context.Background()); err != nil && !errors.Is(err, subnet.ErrNoConfig) {
		t.Fatal(err)
	}
	if code, _ := readyz(r); code != http.StatusOK {
		t.Fatalf("etcd back: %d", code)
	}
}
