package etcd

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/flannelu/flannelu/subnet"
	"github.com/flannelu/flannelu/testbed/logtest"
)

// waitFor polls cond until it holds or timeout passes.
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
	logger, log := logtest.New(nil)
	m := NewManager(c.srv.Client(), Options{Logger: logger, CheckInterval: 200 * time.Millisecond, RequestTimeout: 500 * time.Millisecond})
	l := c.acquire(m, "192.0.2.1", netip.Prefix{})
	done, _ := keep(c, m, l)
	watch(c, m)
	if err := m.Reachable(); err != nil {
		t.Fatalf("Reachable with etcd up = %v", err)
	}
	c.srv.Stop()
	if err := log.Wait("etcd unreachable", 1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := m.Reachable(); err == nil || !strings.Contains(err.Error(), c.srv.Endpoints()[0]) {
		t.Errorf("Reachable = %v, want it to name the endpoint", err)
	}
	// Requests fail within the request timeout instead of blocking.
	start := time.Now()
	if _, err := m.GetConfig(context.Background()); !errors.Is(err, subnet.ErrUnavailable) || time.Since(start) > 5*time.Second {
		t.Errorf("GetConfig with etcd down = %v after %v, want subnet.ErrUnavailable within the timeout", err, time.Since(start))
	}
	// Many failed requests (the keeper reads every 200 ms, the watcher
	// lists again): still one line.
	if err := waitFor(20*time.Second, func() bool { return m.reach.Failures() >= 5 }); err != nil {
		t.Fatalf("fewer than 5 failed requests counted: %d", m.reach.Failures())
	}
	c.srv.Restart()
	if err := log.Wait("etcd reachable again", 1, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := m.Reachable(); err != nil {
		t.Errorf("Reachable after 'reachable again' = %v", err)
	}
	for msg, want := range map[string]int{"etcd unreachable": 1, "etcd still unreachable": 0, "etcd reachable again": 1,
		"lease keeper: etcd error, retrying": 0} {
		if got := log.Count(msg); got != want {
			t.Errorf("%q logged %d times, want %d", msg, got, want)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("KeepLease returned %v during the outage", err)
	default:
	}
}
