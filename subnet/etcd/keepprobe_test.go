package etcd

import (
	"context"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/flannelu/flannelu/testbed/logtest"
)

// rangeCounter counts the unary Range calls a client makes.
type rangeCounter struct{ n atomic.Int64 }

func (r *rangeCounter) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
	invoker grpc.UnaryInvoker, opts ...grpc.CallOption,
) error {
	if method == "/etcdserverpb.KV/Range" {
		r.n.Add(1)
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// Between events the lease keeper asks etcd for progress on its open
// watch instead of reading its key: over 16 check intervals the keeper
// that read its key made 16 Range calls (360 per node per hour at the
// default); this one makes none, or on a loaded machine the odd read
// where etcd's answer came after the next tick (a quarter allowed). Not
// parallel: the other tests' etcd servers share this process.
func TestKeepLeaseProbesWithoutReads(t *testing.T) {
	c := newCluster(t, `{"Network":"198.18.0.0/16"}`)
	var ranges rangeCounter
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.srv.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithUnaryInterceptor(ranges.intercept)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	const every = 500 * time.Millisecond
	logger, log := logtest.New(nil)
	m := NewManager(cli, Options{Logger: logger, CheckInterval: every, RequestTimeout: time.Second})
	l := c.acquire(m, "192.0.2.1", netip.Prefix{})
	keep(c, m, l)
	// The keeper's first read and its watch, then a quiet cluster.
	waitLog(t, log, keeperWatching, 1)
	before := ranges.n.Load()
	time.Sleep(16 * every) // the window the calls are counted in, not a wait for an event
	if got := ranges.n.Load() - before; got > 4 {
		t.Errorf("%d Range calls in %v of a quiet cluster, want at most 4 (the probe should ask the watch for progress)", got, 16*every)
	}
	if err := m.Reachable(); err != nil {
		t.Errorf("Reachable = %v with etcd up", err)
	}
}
