package daemon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/flannelu/flannelu/internal/metrics"
)

// healthRetry is how often the health server tries again to bind a port
// another process holds.
const healthRetry = 250 * time.Millisecond

// healthServer answers /healthz as flanneld does, from the start of the
// process (a liveness probe has no initial delay), /readyz (503 until the
// daemon hands it its readiness, then see readiness) and /metrics with
// the registry (every counter of the process).
type healthServer struct {
	addr  string
	reg   *metrics.Registry
	ready atomic.Pointer[readiness]
	log   *slog.Logger
}

func newHealthServer(o *Options, reg *metrics.Registry, log *slog.Logger) *healthServer {
	return &healthServer{addr: net.JoinHostPort(o.healthzIP, strconv.Itoa(o.healthzPort)), reg: reg, log: log}
}

// setReady makes /readyz answer from r.
func (h *healthServer) setReady(r *readiness) { h.ready.Store(r) }

// run serves until ctx ends. The listener has SO_REUSEPORT, so that the
// old and the new flannelu of a hand-over (a DaemonSet's maxSurge) serve
// side by side. A port held by a process without it (flanneld, beside
// which a migrating flannelu waits) is bound again every healthRetry
// until it is free: never an error.
func (h *healthServer) run(ctx context.Context) {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "flanneld is running\n") //nolint:errcheck // client went away
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, req *http.Request) {
		if r := h.ready.Load(); r != nil {
			r.ServeHTTP(w, req)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "starting: no lease yet\n") //nolint:errcheck // the prober went away
	})
	mux.Handle("/metrics", h.reg)
	ln, err := h.listen(ctx)
	if err != nil {
		return // ctx ended
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		h.log.Error("health server stopped", "addr", h.addr, "error", err)
	}
}

// listen binds the health port, again and again while another process
// holds it; the first failure and the success after it are logged.
func (h *healthServer) listen(ctx context.Context) (net.Listener, error) {
	lc := net.ListenConfig{Control: reusePort}
	tick := time.NewTicker(healthRetry)
	defer tick.Stop()
	var failed error
	for {
		ln, err := lc.Listen(ctx, "tcp", h.addr)
		if err == nil {
			if failed != nil {
				h.log.Info("health port free again: serving /healthz, /readyz and /metrics", "addr", h.addr)
			}
			return ln, nil
		}
		if failed == nil {
			h.log.Warn("health port taken by another process: binding it again until it is free", "addr", h.addr, "error", err)
			failed = err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}
