package daemon

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/flannelu/flannelu/subnet"
)

// storeHealth is what a store can say about itself beyond subnet.Store
// (the etcd Manager does; a store without it counts as healthy).
type storeHealth interface {
	// Reachable is nil while the store answers.
	Reachable() error
	// LeaseHeld is nil while this host's lease is in the store as written.
	LeaseHeld() error
}

// Backend states for /readyz.
const (
	backendWaiting int32 = iota // for the first list of peers
	backendRunning
	backendStopped
)

// Readiness conditions, each a line of /readyz. A part of the daemon that
// readiness should wait for adds its own (readiness.set).
const (
	condLease     = "lease"
	condStore     = "store"
	condSubnetEnv = "subnet file"
	condRules     = "rules"
	condBackend   = "backend"
)

// readiness answers /readyz as flanneld v0.28 does, 200 only once its
// rules and subnet.env are in place, and more: 200 only while every
// condition holds (the lease held, the store answering, subnet.env
// written, the masquerade and forward rules in place, the backend
// running). The body has one line per condition, so a 503 says which is
// not met. /healthz stays flanneld's "running".
type readiness struct {
	mu    sync.Mutex
	conds []condition

	backend atomic.Int32 // backendWaiting, backendRunning or backendStopped
}

// condition is one named part of readiness: check is nil while it holds
// (the line then says good), else the reason it does not.
type condition struct {
	name, good string
	check      func() error
}

// newReadiness has every condition, in the order of /readyz's lines;
// those the start has not reached yet say so until it sets them (the
// subnet file's and the rules').
func newReadiness(store subnet.Store) *readiness {
	r := &readiness{}
	lease, reach := func() error { return nil }, func() error { return nil }
	if h, can := store.(storeHealth); can {
		lease, reach = h.LeaseHeld, h.Reachable
	}
	r.set(condLease, "held", lease)
	r.set(condStore, "reachable", reach)
	r.set(condSubnetEnv, "written", func() error { return errString("not written yet") })
	r.set(condRules, "in place", func() error { return errString("not set up yet") })
	r.set(condBackend, "running", func() error {
		switch r.backend.Load() {
		case backendWaiting:
			return errString("waiting for the first list of peers")
		case backendStopped:
			return errString("stopped")
		}
		return nil
	})
	return r
}

// set replaces the condition of that name, or adds it last.
func (r *readiness) set(name, good string, check func() error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := condition{name: name, good: good, check: check}
	for i := range r.conds {
		if r.conds[i].name == name {
			r.conds[i] = c
			return
		}
	}
	r.conds = append(r.conds, c)
}

func (r *readiness) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	r.mu.Lock()
	conds := append([]condition(nil), r.conds...)
	r.mu.Unlock()
	var b strings.Builder
	ok := true
	for _, c := range conds {
		if err := c.check(); err != nil {
			ok = false
			b.WriteString(c.name + ": " + err.Error() + "\n")
			continue
		}
		b.WriteString(c.name + ": " + c.good + "\n")
	}
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	io.WriteString(w, b.String()) //nolint:errcheck // the prober went away
}

type errString string

func (e errString) Error() string { return string(e) }
