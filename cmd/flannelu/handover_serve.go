package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/backend/udp"
)

// handOffer is a backend with descriptors a successor takes over.
type handOffer interface {
	HandOff() (*udp.Inherited, error)
}

// handOverServer lets a successor on this host take over (see
// predecessor): it answers hello with state and be's descriptors, and on
// leave calls leave, which ends this process.
type handOverServer struct {
	path  string
	state handOverMsg
	be    backend.Backend
	leave func()
	log   *slog.Logger
}

// handOverListening is logged once a successor can connect.
const handOverListening = "hand-over socket listening"

// run serves successors one at a time until one takes over or ctx ends.
func (s *handOverServer) run(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Dir(s.path), 0o755); err != nil {
		return err
	}
	// Whoever listened here before has left (dismissed) or is gone (its
	// socket refused findPredecessor).
	os.Remove(s.path)
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: s.path, Net: "unixpacket"})
	if err != nil {
		return err
	}
	defer ln.Close()
	if err := os.Chmod(s.path, 0o600); err != nil { // the descriptors it hands out carry the pods' traffic
		return err
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	s.log.Info(handOverListening, "path", s.path)
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if s.serve(ctx, c, ln) {
			return nil
		}
	}
}

// serve answers one successor; it reports whether the successor took
// over.
func (s *handOverServer) serve(ctx context.Context, c *net.UnixConn, ln *net.UnixListener) bool {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if err := checkPeer(c); err != nil {
		s.log.Warn("hand-over refused", "error", err)
		return false
	}
	c.SetDeadline(time.Now().Add(handOverTimeout)) //nolint:errcheck // a socket always takes one
	msg, files, err := receiveMsg(c)
	closeFiles(files)
	if err != nil || msg.Op != opHello {
		s.log.Warn("hand-over: no hello from the connecting process", "op", msg.Op, "error", err)
		return false
	}
	if err := s.sendState(c, msg.TakesIPv6); err != nil {
		s.log.Error("hand-over: sending this process's state", "pid", msg.PID, "error", err)
		return false
	}
	s.log.Info("a successor connected; forwarding on until it asks to leave", "pid", msg.PID)
	c.SetDeadline(time.Time{}) //nolint:errcheck // its start-up takes what it takes
	msg, files, err = receiveMsg(c)
	closeFiles(files)
	if err != nil || msg.Op != opLeave {
		s.log.Warn("the successor went away before taking over; carrying on", "op", msg.Op, "error", err)
		return false
	}
	ln.Close() // removes the socket file: the successor listens on it next
	s.log.Info("the successor forwards: leaving the device, the route and the lease to it", "pid", msg.PID)
	stop() // leave ends ctx; the bye still goes out
	s.leave()
	c.SetDeadline(time.Now().Add(handOverTimeout)) //nolint:errcheck // a socket always takes one
	if err := sendMsg(c, handOverMsg{Op: opBye, PID: os.Getpid()}, nil); err != nil {
		s.log.Warn("hand-over: saying bye", "error", err)
	}
	return true
}

// sendState answers a hello: the state and the backend's descriptors, the
// IPv6 sockets only to a successor that takes them (takesIPv6); one that
// does not binds its own beside them (SO_REUSEPORT).
func (s *handOverServer) sendState(c *net.UnixConn, takesIPv6 bool) error {
	state := s.state
	var files []*os.File
	if h, ok := s.be.(handOffer); ok {
		inh, err := h.HandOff()
		if err != nil {
			return err
		}
		defer inh.Close()
		if takesIPv6 {
			state.Sockets6 = len(inh.Sockets6)
		} else {
			for _, f := range inh.Sockets6 {
				f.Close()
			}
			inh.Sockets6 = nil
		}
		state.Queues, files = len(inh.Queues), inh.Files()
	}
	return sendMsg(c, state, files)
}

// checkPeer admits only a process of our own user (root): the socket
// hands out the pods' traffic.
func checkPeer(c *net.UnixConn) error {
	cred, err := peerUID(c)
	if err != nil {
		return err
	}
	if cred != os.Geteuid() {
		return fmt.Errorf("connecting process runs as uid %d, not %d", cred, os.Geteuid())
	}
	return nil
}

var errNoPeerCred = errors.New("peer credentials unavailable")
