package poller

import "syscall"

// Attempt runs a poller callback of the kind syscall.RawConn's Read and
// Write take (true: done; false: not ready, wait) once, without waiting:
// for descriptors kept out of Go's netpoller, whose caller waits itself.
// Bind it once; Run allocates nothing.
type Attempt struct {
	ready bool
	ctl   func(fd uintptr)
}

// Bind prepares the Control callback that runs fn.
func (a *Attempt) Bind(fn func(fd uintptr) bool) {
	a.ctl = func(fd uintptr) { a.ready = fn(fd) }
}

// Run calls fn once on raw's descriptor (through raw.Control, which keeps
// the descriptor open meanwhile) and reports whether fn was done; the
// error is Control's (the file is closed).
func (a *Attempt) Run(raw syscall.RawConn) (done bool, err error) {
	a.ready = true
	err = raw.Control(a.ctl)
	return a.ready, err
}
