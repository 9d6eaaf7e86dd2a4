// Package outage tells an operator when a dependency (etcd, the Kubernetes
// API) stops answering: one line when an outage starts, naming the
// endpoint and the error; at most one a minute while it lasts; one when it
// ends, with its duration. It also answers whether the dependency is
// reachable now, for /readyz.
package outage

import (
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// DefaultRepeat is how often a lasting outage is logged again.
const DefaultRepeat = time.Minute

// Tracker follows one dependency. Callers report each request's outcome
// with Fail or OK; the zero value is not usable, use New. Safe for
// concurrent use: every goroutine talking to the dependency reports to the
// same Tracker, so one outage is one set of log lines.
type Tracker struct {
	what, where string
	log         *slog.Logger
	repeat      time.Duration
	now         func() time.Time

	mu       sync.Mutex
	since    time.Time // start of the current outage; zero while reachable
	logged   time.Time // last outage line
	lastErr  error
	failures uint64
}

// Options shape a Tracker.
type Options struct {
	What   string        // the dependency, e.g. "etcd"
	Where  string        // its endpoint(s), e.g. "http://192.0.2.1:2379"
	Logger *slog.Logger  // default slog.Default()
	Repeat time.Duration // default DefaultRepeat
	Now    func() time.Time
}

// New returns a Tracker that considers the dependency reachable.
func New(o Options) *Tracker {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Repeat <= 0 {
		o.Repeat = DefaultRepeat
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Tracker{what: o.What, where: o.Where, log: o.Logger, repeat: o.Repeat, now: o.Now}
}

// Fail reports a request, sent at sent, that got no answer: the outage
// began no later than that. The first failure starts an outage and is
// logged; later ones are logged at most once per Repeat.
func (t *Tracker) Fail(sent time.Time, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	t.lastErr = err
	t.failures++
	switch {
	case t.since.IsZero():
		t.since, t.logged = sent, now
		t.log.Warn(t.what+" unreachable", "endpoint", t.where, "error", err)
	case now.Sub(t.logged) >= t.repeat:
		t.logged = now
		t.log.Warn(t.what+" still unreachable", "endpoint", t.where, "for", now.Sub(t.since).Round(time.Second).String(), "error", err)
	}
}

// OK reports an answered request; it ends an outage, logging how long it
// lasted.
func (t *Tracker) OK() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.since.IsZero() {
		return
	}
	t.log.Info(t.what+" reachable again", "endpoint", t.where, "outage", t.now().Sub(t.since).Round(time.Millisecond).String())
	t.since, t.lastErr = time.Time{}, nil
}

// Err is nil while the dependency is reachable, else an error saying since
// when it is not and why.
func (t *Tracker) Err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.since.IsZero() {
		return nil
	}
	return fmt.Errorf("%s (%s) unreachable for %s: %w", t.what, t.where, t.now().Sub(t.since).Round(time.Second), t.lastErr)
}

// Down reports whether an outage is going on, without building Err's
// message (for a gauge read at every scrape).
func (t *Tracker) Down() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return !t.since.IsZero()
}

// Failures is how many failed requests were reported in all.
func (t *Tracker) Failures() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failures
}
