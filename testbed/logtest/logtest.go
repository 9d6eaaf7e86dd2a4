// Package logtest gives tests a logger whose messages they can wait for
// ("a reconcile pass finished", "the lease was renewed") instead of
// sleeping for as long as that usually takes. It imports nothing of
// flannelu's, so any package's tests can use it.
package logtest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"
)

// Log counts the messages logged through a logger made by New and the
// loggers derived from it (With, WithGroup).
type Log struct {
	mu      sync.Mutex
	counts  map[string]int
	changed chan struct{} // closed and replaced on every message
}

// New returns a logger that writes text lines at debug level and up to w
// (nil: nowhere) and counts their messages in the returned Log.
func New(w io.Writer) (*slog.Logger, *Log) {
	if w == nil {
		w = io.Discard
	}
	l := &Log{counts: map[string]int{}, changed: make(chan struct{})}
	text := slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})
	return slog.New(handler{text, l}), l
}

// Of returns the Log behind a logger made by New or derived from one, or
// nil for any other logger.
func Of(logger *slog.Logger) *Log {
	if h, ok := logger.Handler().(handler); ok {
		return h.log
	}
	return nil
}

// Count is how many times msg has been logged so far.
func (l *Log) Count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.counts[msg]
}

// Wait waits until msg has been logged n times in all; after timeout it
// returns an error saying how many times it was.
func (l *Log) Wait(msg string, n int, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		got, changed := l.counts[msg], l.changed
		l.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-changed:
		case <-deadline.C:
			return fmt.Errorf("%q logged %d times in %v, want %d", msg, got, timeout, n)
		}
	}
}

type handler struct {
	slog.Handler
	log *Log
}

func (h handler) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	h.log.mu.Lock()
	h.log.counts[r.Message]++
	close(h.log.changed)
	h.log.changed = make(chan struct{})
	h.log.mu.Unlock()
	return err
}

func (h handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return handler{h.Handler.WithAttrs(attrs), h.log}
}

func (h handler) WithGroup(name string) slog.Handler {
	return handler{h.Handler.WithGroup(name), h.log}
}
