// Package etcdtest runs a real, single-member etcd inside the test process
// so that subnet's tests (and any other package's) talk to the same server
// flanneld talks to, not to a mock.
package etcdtest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// startTimeout bounds how long a (re)start may take before the test fails.
const startTimeout = 20 * time.Second

// Server is one embedded etcd member listening on 127.0.0.1. It is stopped
// and its clients closed when the test that started it ends.
type Server struct {
	tb        testing.TB
	dir       string
	clientURL url.URL
	peerURL   url.URL
	mu        sync.Mutex
	etcd      *embed.Etcd // nil while stopped
	clients   []*clientv3.Client
}

// Start launches an etcd member with a fresh data directory under
// tb.TempDir() on two free loopback ports. It fails the test if etcd is not
// ready within 20 s.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{
		tb:        tb,
		dir:       tb.TempDir(),
		clientURL: url.URL{Scheme: "http", Host: freeAddr(tb)},
		peerURL:   url.URL{Scheme: "http", Host: freeAddr(tb)},
	}
	if err := s.start(); err != nil {
		tb.Fatalf("etcdtest: start: %v", err)
	}
	tb.Cleanup(s.cleanup)
	return s
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("etcdtest: find free port: %v", err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func (s *Server) config() *embed.Config {
	cfg := embed.NewConfig()
	cfg.Name = "etcdtest"
	cfg.Dir = s.dir
	cfg.ListenClientUrls = []url.URL{s.clientURL}
	cfg.AdvertiseClientUrls = []url.URL{s.clientURL}
	cfg.ListenPeerUrls = []url.URL{s.peerURL}
	cfg.AdvertisePeerUrls = []url.URL{s.peerURL}
	cfg.InitialCluster = fmt.Sprintf("%s=%s", cfg.Name, s.peerURL.String())
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	// A single member elects itself quickly with short ticks.
	cfg.TickMs = 10
	cfg.ElectionMs = 100
	return cfg
}

func (s *Server) start() error {
	e, err := embed.StartEtcd(s.config())
	if err != nil {
		return err
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(startTimeout):
		e.Close()
		return fmt.Errorf("etcd not ready after %v", startTimeout)
	}
	s.mu.Lock()
	s.etcd = e
	s.mu.Unlock()
	return nil
}

// Endpoints are the client URLs, for clientv3.Config.Endpoints.
func (s *Server) Endpoints() []string { return []string{s.clientURL.String()} }

// Client returns a new client for this server; it is closed when the test
// ends. Each call returns a distinct client (distinct gRPC connection), as
// separate flanneld hosts would have.
func (s *Server) Client() *clientv3.Client {
	s.tb.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   s.Endpoints(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		s.tb.Fatalf("etcdtest: client: %v", err)
	}
	s.mu.Lock()
	s.clients = append(s.clients, cli)
	s.mu.Unlock()
	return cli
}

// Stop shuts etcd down, keeping its data directory and ports for Restart.
// Clients stay open and reconnect when the server is back.
func (s *Server) Stop() {
	s.mu.Lock()
	e := s.etcd
	s.etcd = nil
	s.mu.Unlock()
	if e != nil {
		e.Close()
	}
}

// Restart stops etcd (if running) and starts it again on the same data
// directory and ports, as a crashed and restarted etcd would come back.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Stop()
	// The old listeners may take a moment to release the ports: retry
	// until a start succeeds.
	deadline := time.Now().Add(startTimeout)
	for {
		err := s.start()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("etcdtest: restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// CompactNow compacts the key space up to the current revision, so a
// watcher that resumes from an older revision gets ErrCompacted. It returns
// the revision compacted to.
func (s *Server) CompactNow() int64 {
	s.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli := s.Client()
	resp, err := cli.Get(ctx, "compact-probe")
	if err != nil {
		s.tb.Fatalf("etcdtest: read revision: %v", err)
	}
	rev := resp.Header.Revision
	if _, err := cli.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
		s.tb.Fatalf("etcdtest: compact %d: %v", rev, err)
	}
	return rev
}

func (s *Server) cleanup() {
	s.mu.Lock()
	clients := s.clients
	s.clients = nil
	s.mu.Unlock()
	for _, c := range clients {
		c.Close()
	}
	s.Stop()
}
