package main

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/flannelu/flannelu/subnet"
	"github.com/flannelu/flannelu/subnet/etcdtest"
)

func readyz(r *readiness) (int, string) {
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	return rec.Code, rec.Body.String()
}

// /readyz says which part is not ready: the backend before the first
// peer list, the store while etcd does not answer.
func TestReadyz(t *testing.T) {
	srv := etcdtest.Start(t)
	mgr := subnet.NewManager(srv.Client(), subnet.Options{Logger: discardLogger(), RequestTimeout: 500 * time.Millisecond})
	r := &readiness{store: mgr}
	if code, body := readyz(r); code != http.StatusServiceUnavailable || body != "lease: held\nstore: reachable\nbackend: waiting for the first list of peers\n" {
		t.Fatalf("before the backend runs: %d %q", code, body)
	}
	r.backend.Store(backendRunning)
	if code, body := readyz(r); code != http.StatusOK || body != "lease: held\nstore: reachable\nbackend: running\n" {
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
