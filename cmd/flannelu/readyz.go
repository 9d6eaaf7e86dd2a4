package main

import (
	"io"
	"net/http"
	"strings"
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

// readiness answers /readyz: 200 only while the lease is held, the store
// answers, the backend runs and subnet.env is written; the body has one line per part, so a 503
// says which part is not ready. /healthz stays flanneld's "running".
type readiness struct {
	store   subnet.Store
	backend atomic.Int32
	// subnetFile, when set, is ready once subnet.env is written.
	subnetFile interface{ Err() error }
}

func (r *readiness) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	var b strings.Builder
	ok := true
	part := func(name string, err error, good string) {
		if err != nil {
			ok = false
			b.WriteString(name + ": " + err.Error() + "\n")
			return
		}
		b.WriteString(name + ": " + good + "\n")
	}
	var lease, store error
	if h, can := r.store.(storeHealth); can {
		lease, store = h.LeaseHeld(), h.Reachable()
	}
	part("lease", lease, "held")
	part("store", store, "reachable")
	var be error
	switch r.backend.Load() {
	case backendWaiting:
		be = errString("waiting for the first list of peers")
	case backendStopped:
		be = errString("stopped")
	}
	part("backend", be, "running")
	if r.subnetFile != nil {
		part("subnet file", r.subnetFile.Err(), "written")
	}
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	io.WriteString(w, b.String()) //nolint:errcheck // the prober went away
}

type errString string

func (e errString) Error() string { return string(e) }
