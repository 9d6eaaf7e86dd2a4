package subnet

import (
	"context"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
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
// watch instead of reading its key: over 20 check intervals the keeper
// that read its key made 20 Range calls (360 per node per hour at the
// default); this one makes none, or under a loaded machine the odd read
// where an answer came after the next tick (at most 2 allowed).
func TestKeepLeaseProbesWithoutReads(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `{"Network":"198.18.0.0/16"}`)
	var ranges rangeCounter
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.srv.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithUnaryInterceptor(ranges.intercept)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	const every = 200 * time.Millisecond
	m := NewManager(cli, Options{CheckInterval: every, RequestTimeout: time.Second})
	l := c.acquire(m, "192.0.2.1", netip.Prefix{})
	keep(c, m, l)
	// The keeper's first read and its watch, then a quiet cluster.
	if err := waitFor(eventDeadline, func() bool { return ranges.n.Load() >= 1 }); err != nil {
		t.Fatal("the keeper never read its key")
	}
	time.Sleep(2 * every) // the watch is made aside: let it be set up (not an event to wait on)
	before := ranges.n.Load()
	time.Sleep(20 * every)
	if got := ranges.n.Load() - before; got > 2 {
		t.Errorf("%d Range calls in %v of a quiet cluster, want at most 2 (the probe should ask the watch for progress)", got, 20*every)
	}
	if err := m.Reachable(); err != nil {
		t.Errorf("Reachable = %v with etcd up", err)
	}
}
