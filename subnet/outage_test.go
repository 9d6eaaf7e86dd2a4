package subnet

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a log destination several goroutines write to.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitFor(timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// An etcd outage at run time is noticed by the keeper's periodic read
// (the watches are silent), logged once when it starts with the endpoint
// and once when it ends with its duration, and reported by Reachable.
func TestOutageLoggedAndReported(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `{"Network":"198.18.0.0/16"}`)
	var log syncBuffer
	m := NewManager(c.srv.Client(), Options{Logger: slog.New(slog.NewTextHandler(&log, nil)),
		CheckInterval: 200 * time.Millisecond, RequestTimeout: 500 * time.Millisecond})
	l := c.acquire(m, "192.0.2.1", netip.Prefix{})
	done, _ := keep(c, m, l)
	watch(c, m)
	if err := m.Reachable(); err != nil {
		t.Fatalf("Reachable with etcd up = %v", err)
	}
	c.srv.Stop()
	if err := waitFor(10*time.Second, func() bool { return m.Reachable() != nil }); err != nil {
		t.Fatalf("Reachable still nil 10s after etcd stopped; log:\n%s", log.String())
	}
	if err := m.Reachable(); !strings.Contains(err.Error(), c.srv.Endpoints()[0]) {
		t.Errorf("Reachable = %v, want it to name the endpoint", err)
	}
	// Requests fail within the request timeout instead of blocking.
	start := time.Now()
	if _, err := m.GetConfig(context.Background()); !errors.Is(err, ErrUnavailable) || time.Since(start) > 5*time.Second {
		t.Errorf("GetConfig with etcd down = %v after %v, want ErrUnavailable within the timeout", err, time.Since(start))
	}
	time.Sleep(2 * time.Second) // an outage of a few seconds: many failed requests, still one line
	c.srv.Restart()
	if err := waitFor(15*time.Second, func() bool { return m.Reachable() == nil }); err != nil {
		t.Fatalf("Reachable still failing 15s after etcd came back: %v", m.Reachable())
	}
	text := log.String()
	if n := strings.Count(text, `msg="etcd unreachable" endpoint=`+c.srv.Endpoints()[0]); n != 1 {
		t.Errorf("%d 'etcd unreachable' lines naming the endpoint, want 1:\n%s", n, text)
	}
	if strings.Count(text, "still unreachable") != 0 || strings.Count(text, `msg="etcd reachable again"`) != 1 ||
		!strings.Contains(text, "outage=") {
		t.Errorf("want no repeat within a minute and one 'reachable again' with the outage's length:\n%s", text)
	}
	if strings.Contains(text, "lease keeper: etcd error") || strings.Contains(text, "lease watch interrupted") {
		t.Errorf("outage errors logged outside the tracker's lines:\n%s", text)
	}
	select {
	case err := <-done:
		t.Fatalf("KeepLease returned %v during the outage", err)
	default:
	}
}
