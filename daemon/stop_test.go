package daemon

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/flannelu/flannelu/testbed/etcdtest"
	"github.com/flannelu/flannelu/testbed/logtest"
)

// A signal while start-up waits (for a config that is not there, or for
// an etcd that does not answer) is a clean stop saying where it came.
func TestStopDuringStartUpIsClean(t *testing.T) {
	srv := etcdtest.Start(t)
	for _, c := range []struct {
		name, endpoint, waitFor string
	}{
		{"no config yet", srv.Endpoints()[0], "cannot use the network config, retrying every second"},
		{"etcd unreachable", "http://127.0.0.1:1", "etcd unreachable"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o, err := ParseOptions([]string{"--etcd-endpoints", c.endpoint, "--subnet-file", t.TempDir() + "/subnet.env"}, envOf(nil), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			logger, log := logtest.New(nil)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- Run(ctx, o, logger) }()
			if err := log.Wait(c.waitFor, 1, 30*time.Second); err != nil {
				t.Fatal(err)
			}
			cancel() // what SIGTERM does
			var stopped *StoppedError
			if err := <-done; !errors.As(err, &stopped) || stopped.Stage != "waiting for the network config" {
				t.Fatalf("run = %v, want a stop while waiting for the network config", err)
			}
		})
	}
}
