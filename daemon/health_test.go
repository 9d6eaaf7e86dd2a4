package daemon

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/flannelu/flannelu/internal/metrics"
	"github.com/flannelu/flannelu/testbed/logtest"
)

// A health port another process holds (flanneld binds it without
// SO_REUSEPORT) is waited for, never an error: /healthz is served once it
// is free, and /readyz is 503 until the daemon has its readiness.
func TestHealthWaitsForItsPort(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := held.Addr().(*net.TCPAddr).Port
	logger, log := logtest.New(nil)
	h := newHealthServer(&Options{healthzIP: "127.0.0.1", healthzPort: port}, metrics.NewRegistry(), logger)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.run(ctx) }()
	defer func() { cancel(); <-done }()
	if err := log.Wait("health port taken by another process: binding it again until it is free", 1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	held.Close()
	if err := log.Wait("health port free again: serving /healthz, /readyz and /metrics", 1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	url := "http://127.0.0.1:" + strconv.Itoa(port)
	for path, want := range map[string]int{"/healthz": http.StatusOK, "/readyz": http.StatusServiceUnavailable} {
		resp, err := http.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %d %q, want %d", path, resp.StatusCode, b, want)
		}
	}
	r := &readiness{}
	r.backend.Store(backendRunning)
	h.setReady(r)
	resp, err := http.Get(url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz once ready: %d", resp.StatusCode)
	}
}
