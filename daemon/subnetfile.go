package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/flannelu/flannelu/internal/metrics"
	"github.com/flannelu/flannelu/internal/outage"
	"github.com/flannelu/flannelu/subnet"
)

// subnetFile keeps subnet.env written. A write that fails (a full disk, a
// read-only mount) leaves the previous file whole (subnet.WriteEnv), does
// not stop the daemon, which goes on forwarding for the pods that exist,
// and is tried again every second until it lands: flanneld v0.28.9 also
// carries on, but never retries and stays unready until restarted.
// Meanwhile /readyz answers 503 with the error, each failure is counted,
// and the log says so when it starts, at most once a minute while it
// lasts, and when the file is written.
type subnetFile struct {
	path     string
	env      subnet.Env
	log      *slog.Logger
	failures *metrics.Counter

	mu     sync.Mutex
	err    error     // the last write's; nil once written
	since  time.Time // first failure of the current run of them
	logged time.Time
}

func newSubnetFile(path string, env subnet.Env, reg *metrics.Registry, log *slog.Logger) *subnetFile {
	return &subnetFile{path: path, env: env, log: log, err: errString("not written yet"),
		failures: reg.Counter("flannelu_subnet_file_write_failures_total",
			"Failed writes of subnet.env (--subnet-file): the previous file is kept whole and the write retried every second.")}
}

// write tries once and reports whether the file is written.
func (f *subnetFile) write() bool {
	err := subnet.WriteEnv(f.path, f.env)
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	switch {
	case err == nil && f.since.IsZero():
		f.log.Info("wrote subnet file", "path", f.path, "mtu", f.env.MTU)
	case err == nil:
		f.log.Info("wrote subnet file", "path", f.path, "mtu", f.env.MTU, "after", now.Sub(f.since).Round(time.Second).String())
		f.since = time.Time{}
	case f.since.IsZero():
		f.since, f.logged = now, now
		f.log.Error("cannot write the subnet file; the previous one is kept as it was, /readyz answers 503, retrying every second",
			"path", f.path, "error", err)
	case now.Sub(f.logged) >= outage.DefaultRepeat:
		f.logged = now
		f.log.Error("still cannot write the subnet file", "path", f.path, "for", now.Sub(f.since).Round(time.Second).String(), "error", err)
	}
	if err != nil {
		f.failures.Inc()
		err = fmt.Errorf("%w (failing for %s)", err, now.Sub(f.since).Round(time.Second))
	}
	f.err = err
	return err == nil
}

// keep retries a failed write until it lands or ctx ends.
func (f *subnetFile) keep(ctx context.Context) {
	if f.Err() == nil {
		return
	}
	everySecond(ctx, f.write) //nolint:errcheck // ends with ctx
}

// Err is nil once the file is written: a /readyz condition.
func (f *subnetFile) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}
