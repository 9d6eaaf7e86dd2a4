package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/flannelu/flannelu/metrics"
)

// serveHealth answers /healthz as flanneld does, /readyz (see readiness)
// and /metrics with reg (every counter of the process), until ctx ends.
func serveHealth(ctx context.Context, o *options, reg *metrics.Registry, ready *readiness) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "flanneld is running\n") //nolint:errcheck // client went away
	})
	mux.Handle("/readyz", ready)
	mux.Handle("/metrics", reg)
	addr := net.JoinHostPort(o.healthzIP, strconv.Itoa(o.healthzPort))
	// SO_REUSEPORT: during a hand-over (a DaemonSet's maxSurge) the old and
	// the new process serve side by side on one host's network.
	lc := net.ListenConfig{Control: reusePort}
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("healthz on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
