package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flannelu/flannelu/subnet/etcdtest"
)

// lockedBuffer is a log destination several goroutines write to.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A signal while start-up waits (for a config that is not there, or for
// an etcd that does not answer) is a clean stop saying where it came.
func TestStopDuringStartUpIsClean(t *testing.T) {
	srv := etcdtest.Start(t)
	for _, c := range []struct {
		name, endpoint, waitFor string
	}{
		{"no config yet", srv.Endpoints()[0], "cannot use the network config"},
		{"etcd unreachable", "http://127.0.0.1:1", "etcd unreachable"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o, err := parseOptions([]string{"--etcd-endpoints", c.endpoint, "--subnet-file", t.TempDir() + "/subnet.env"}, envOf(nil), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			var log lockedBuffer
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- run(ctx, o, slog.New(slog.NewTextHandler(&log, nil))) }()
			deadline := time.Now().Add(20 * time.Second)
			for !strings.Contains(log.String(), c.waitFor) {
				if time.Now().After(deadline) {
					t.Fatalf("no %q line in 20s:\n%s", c.waitFor, log.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			cancel() // what SIGTERM does
			var stopped *stoppedError
			if err := <-done; !errors.As(err, &stopped) || stopped.stage != "waiting for the network config" {
				t.Fatalf("run = %v, want a stop while waiting for the network config", err)
			}
		})
	}
}
