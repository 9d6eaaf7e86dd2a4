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

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/iptables"
	"github.com/flannelu/flannelu/subnet"
)

// metricsWriter is implemented by backends that count what they forward
// and drop (the udp backend).
type metricsWriter interface {
	WritePrometheus(w io.Writer)
}

// serveHealth answers /healthz as flanneld does and /metrics in the
// Prometheus text format, until ctx ends. ipt is nil when flannelu keeps
// no iptables rules.
func serveHealth(ctx context.Context, o *options, be backend.Backend, mgr subnet.Store, ipt *iptables.Runner) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "flanneld is running\n") //nolint:errcheck // client went away
	})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprintf(w, "# TYPE flannelu_malformed_leases_total counter\nflannelu_malformed_leases_total %d\n", mgr.MalformedLeases())
		if ipt != nil {
			fmt.Fprintf(w, "# TYPE flannelu_iptables_resync_failures_total counter\nflannelu_iptables_resync_failures_total %d\n", ipt.Failures())
		}
		if m, ok := be.(metricsWriter); ok {
			m.WritePrometheus(w)
		}
	})
	addr := net.JoinHostPort(o.healthzIP, strconv.Itoa(o.healthzPort))
	ln, err := net.Listen("tcp", addr)
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
