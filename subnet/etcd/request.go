package etcd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/flannelu/flannelu/internal/outage"
	"github.com/flannelu/flannelu/subnet"
)

// Defaults for Options.RequestTimeout and Options.CheckInterval.
const (
	// defaultRequestTimeout bounds one etcd request. The etcd client
	// waits for a connection as long as the context allows, so without a
	// bound an unreachable etcd blocks a caller silently forever.
	defaultRequestTimeout = 5 * time.Second
	// defaultCheckInterval is how often the lease keeper reads its key.
	// A watch on a dead etcd is silent, so this read is what notices a
	// run-time outage; it also re-checks the value a watch could miss.
	// One linearizable read of one key per host every 10 s: 100 reads/s
	// for 1000 hosts, which etcd serves without notice.
	defaultCheckInterval = 10 * time.Second
)

// do runs one etcd request with the request timeout and reports the
// outcome to the outage tracker. A request the caller cancelled is neither
// an outage nor the end of one. Errors of an unanswered request wrap
// ErrUnavailable.
func (m *Manager) do(ctx context.Context, req func(context.Context) error) error {
	rctx, cancel := context.WithTimeout(ctx, m.reqTimeout)
	defer cancel()
	sent := time.Now()
	err := req(rctx)
	switch {
	case err == nil || answered(err):
		m.reach.OK()
	case ctx.Err() != nil:
	default:
		if errors.Is(err, context.DeadlineExceeded) {
			// The client says only that it gave up; a plain TCP
			// connect tells the operator why (refused, no route).
			if derr := dialEndpoints(m.cli.Endpoints()); derr != nil {
				err = fmt.Errorf("%w (%w)", err, derr)
			}
		}
		m.reach.Fail(sent, err)
		err = fmt.Errorf("%w: %w", subnet.ErrUnavailable, err)
	}
	return err
}

// dialEndpoints connects to each endpoint over TCP and returns the first
// failure, nil when all accept a connection (then the trouble is above
// TCP: TLS, no leader, overload).
func dialEndpoints(endpoints []string) error {
	for _, ep := range endpoints {
		u, err := url.Parse(ep)
		if err != nil || u.Host == "" {
			continue
		}
		c, err := net.DialTimeout("tcp", u.Host, time.Second)
		if err != nil {
			return err
		}
		c.Close()
	}
	return nil
}

// answered reports whether err is etcd's answer to the request (no such
// lease, compacted revision, ...) rather than the lack of one.
func answered(err error) bool {
	code := status.Code(err)
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		code = ee.Code()
	}
	switch code {
	case codes.NotFound, codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange, codes.AlreadyExists:
		return true
	}
	return false
}

// Reachable is nil while etcd answers, else an error saying for how long
// it has not and why (for /readyz).
func (m *Manager) Reachable() error { return m.reach.Err() }

// Outage is the tracker every etcd request reports to.
func (m *Manager) Outage() *outage.Tracker { return m.reach }

// get is a Get through do.
func (m *Manager) get(ctx context.Context, key string, opts ...clientv3.OpOption) (resp *clientv3.GetResponse, err error) {
	err = m.do(ctx, func(ctx context.Context) error {
		resp, err = m.cli.Get(ctx, key, opts...)
		return err
	})
	return resp, err
}

// txn commits If(cmp...).Then(then...).Else(els...) through do.
func (m *Manager) txn(ctx context.Context, cmp []clientv3.Cmp, then []clientv3.Op, els ...clientv3.Op) (resp *clientv3.TxnResponse, err error) {
	err = m.do(ctx, func(ctx context.Context) error {
		resp, err = m.cli.Txn(ctx).If(cmp...).Then(then...).Else(els...).Commit()
		return err
	})
	return resp, err
}

// grant is a Grant of the Manager's TTL through do.
func (m *Manager) grant(ctx context.Context) (resp *clientv3.LeaseGrantResponse, err error) {
	err = m.do(ctx, func(ctx context.Context) error {
		resp, err = m.cli.Grant(ctx, int64(m.ttl/time.Second))
		return err
	})
	return resp, err
}
