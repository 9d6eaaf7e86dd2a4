package handover

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flannelu/flannelu/backend/udp"
	"github.com/flannelu/flannelu/subnet"
)

// DefaultTimeout bounds a successor's start-up, from the descriptors lent
// to its leave: longer than a start on a loaded host takes (store, lease,
// first list of peers), short enough that a stalled client does not keep
// a real successor waiting for long.
const DefaultTimeout = 30 * time.Second

// helloTimeout bounds the wait for a connecting process's hello.
var helloTimeout = 5 * time.Second

// maxConns bounds the connections served at once: refused ones are held
// open until this process stops (their closing tells the refused process
// that it may start), the rest end within helloTimeout or Timeout.
const maxConns = 16

// Log messages a test or an operator waits for.
const (
	Listening = "hand-over socket listening"
	// Refused is the running flannelu's line for a process it does not
	// hand over to; its reason says why.
	Refused = "hand-over refused: not a successor of this flannelu; carrying on"
	CutOff  = "hand-over: the successor did not take over in time; cut off, carrying on"
)

// Server is the running flannelu's side.
type Server struct {
	Addr     Addr
	Identity Identity
	Lease    subnet.Lease
	// Lend duplicates the descriptors a successor takes over; nil when
	// there are none (the kernel backends share kernel state only).
	Lend func() (*udp.Inherited, error)
	// Leave is called once a successor forwards: this process stops
	// forwarding and leaves everything to it, and Leave returns once it
	// has (the successor is told then). Run returns soon after.
	Leave   func()
	Timeout time.Duration // DefaultTimeout when zero
	Log     *slog.Logger

	lending sync.Mutex // one successor at a time holds lent descriptors
	conns   atomic.Int32
	left    atomic.Bool
}

// Run serves successors until one takes over or ctx ends.
func (s *Server) Run(ctx context.Context) error {
	if s.Timeout <= 0 {
		s.Timeout = DefaultTimeout
	}
	ln, err := s.Addr.listen(ctx, s.Log)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var closeOnce sync.Once
	closeLn := func() { closeOnce.Do(func() { ln.Close() }) }
	defer closeLn()
	stop := context.AfterFunc(ctx, closeLn)
	defer stop()
	s.Log.Info(Listening, "addr", s.Addr.String())
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil || s.left.Load() {
				return nil
			}
			return err
		}
		if s.conns.Add(1) > maxConns {
			s.conns.Add(-1)
			c.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.conns.Add(-1)
			if s.serve(ctx, c, closeLn) {
				cancel()
			}
		}()
	}
}

// serve answers one connecting process; it reports whether it took over.
func (s *Server) serve(ctx context.Context, c *net.UnixConn, closeLn func()) bool {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	c.SetDeadline(time.Now().Add(helloTimeout)) //nolint:errcheck // a socket always takes one
	p, err := peerOf(c)
	var foreign bool
	if err == nil {
		foreign, err = p.check(s.Addr.Abstract)
	}
	if err != nil {
		s.Log.Warn(Refused, "pid", p.pid, "reason", err.Error())
		send(c, message{Op: opRefuse, PID: os.Getpid(), Reason: err.Error(), Foreign: foreign}, nil) //nolint:errcheck // it may be gone
		return false
	}
	hello, files, err := receive(c)
	closeFiles(files)
	if err == nil && (hello.Op != opHello || hello.Identity == nil) {
		err = errors.New("expected a hello with an identity, got " + strconv.Quote(hello.Op))
	}
	if err != nil {
		s.Log.Warn(Refused, "pid", p.pid, "reason", "no hello: "+err.Error())
		send(c, message{Op: opRefuse, PID: os.Getpid(), Reason: "no hello: " + err.Error()}, nil) //nolint:errcheck // it may be gone
		return false
	}
	if why := differs(s.Identity, *hello.Identity); why != "" {
		s.Log.Warn(Refused, "pid", hello.PID, "reason", "it serves another network ("+why+"); it waits until this one stops")
		s.refuse(ctx, c, "it serves another network ("+differs(*hello.Identity, s.Identity)+")")
		return false
	}
	if !s.lend(c, hello.PID) {
		return false
	}
	closeLn() // the successor listens next
	s.Log.Info("the successor forwards: leaving the device, the route and the lease to it", "pid", hello.PID)
	stop() // Leave ends ctx; the bye still goes out
	s.Leave()
	c.SetDeadline(time.Now().Add(helloTimeout)) //nolint:errcheck // a socket always takes one
	if err := send(c, message{Op: opBye, PID: os.Getpid()}, nil); err != nil {
		s.Log.Warn("hand-over: saying bye", "error", err)
	}
	return true
}

// refuse tells the process why, and holds the connection open until this
// process stops (or it goes away): the end of the connection tells it
// that it may start.
func (s *Server) refuse(ctx context.Context, c *net.UnixConn, why string) {
	if err := send(c, message{Op: opRefuse, PID: os.Getpid(), Reason: why}, nil); err != nil {
		return
	}
	c.SetDeadline(time.Time{}) //nolint:errcheck // a socket always takes one
	for ctx.Err() == nil {
		_, files, err := receive(c)
		closeFiles(files)
		if err != nil {
			return
		}
	}
}

// lend hands the lease and the descriptors to a successor and waits, at
// most Timeout, for its leave; it reports whether the leave came.
func (s *Server) lend(c *net.UnixConn, pid int) bool {
	s.lending.Lock()
	defer s.lending.Unlock()
	if s.left.Load() {
		return false
	}
	state := message{Op: opState, PID: os.Getpid(), Identity: &s.Identity, Lease: &s.Lease}
	var files []*os.File
	if s.Lend != nil {
		inh, err := s.Lend()
		if err != nil {
			s.Log.Error("hand-over: duplicating this process's descriptors", "pid", pid, "error", err)
			return false
		}
		defer inh.Close()
		state.Queues, state.Sockets6, files = len(inh.Queues), len(inh.Sockets6), inh.Files()
	}
	c.SetDeadline(time.Now().Add(s.Timeout)) //nolint:errcheck // a socket always takes one
	if err := send(c, state, files); err != nil {
		s.Log.Error("hand-over: sending this process's state", "pid", pid, "error", err)
		return false
	}
	s.Log.Info("a successor connected; forwarding on until it asks to leave", "pid", pid, "descriptors", len(files), "timeout", s.Timeout)
	m, got, err := receive(c)
	closeFiles(got)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		s.Log.Warn(CutOff, "pid", pid, "timeout", s.Timeout)
		return false
	case err == nil && m.Op == opRefuse:
		s.Log.Warn("hand-over: the successor gave up; carrying on", "pid", pid, "reason", m.Reason)
		return false
	case err != nil || m.Op != opLeave:
		s.Log.Warn("hand-over: the successor went away before taking over; carrying on", "pid", pid, "op", m.Op, "error", err)
		return false
	}
	s.left.Store(true) // before another successor waiting for lending gets it
	return true
}
