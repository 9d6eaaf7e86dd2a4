package etcd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/flannelu/flannelu/subnet"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"
)

// retryDelay spaces out retries while etcd is unreachable.
const retryDelay = time.Second

// keeperWatching is logged (debug) once the keeper has found the key its
// own and watches it: from here on no change to the key goes unseen.
const keeperWatching = "lease keeper watching"

// leaseRenewed is logged (info) on every renewal.
const leaseRenewed = "renewed subnet lease"

// errChanged is internal: our key is gone, no longer on our etcd lease,
// or holds another value.
var errChanged = errors.New("own lease changed")

// KeepLease keeps lease alive until ctx is done, then returns nil without
// deleting or revoking it (a restarted host gets the same subnet back).
// It renews RenewMargin before expiry (at a third of the TTL when the
// margin is not shorter than the TTL), watches the lease's key, and reads
// it every CheckInterval (a watch on a dead etcd is silent; the read is
// what notices the outage). Forwarding never waits for it.
//
// When the key changes (deleted, revoked, overwritten with garbage, with
// another host's value, or detached from our etcd lease by a plain put) it
// logs what it found and writes our value back, on our etcd lease (a new
// one if ours is gone) -- unless another live host holds the key: attached
// to a live etcd lease that is not ours, with a value naming another
// address. Only then does it return an error matching ErrLeaseTaken. A
// value without an etcd lease over our live lease is an overwrite (etcdctl
// put), not a reservation: reservations are made on free subnets, so to
// reserve a held subnet for another host, stop its holder and delete its
// key first. A reservation we hold (LeaseID 0) needs no renewal; when
// rewritten for another address, the operator moved it and it is taken.
func (m *Manager) KeepLease(ctx context.Context, cfg *subnet.Config, lease subnet.Lease) error {
	value, err := subnet.MarshalLeaseAttrs(lease.Attrs)
	if err != nil {
		return err
	}
	k := &keeper{m: m, cfg: cfg, lease: lease, key: m.key(lease.Subnet, lease.IPv6Subnet), value: string(value)}
	for {
		err := k.run(ctx)
		if errors.Is(err, errChanged) {
			m.setLeaseTrouble("own lease changed in etcd, being written back")
			if err = k.restore(ctx); err == nil {
				m.setLeaseTrouble("")
			}
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, ErrLeaseTaken):
			m.setLeaseTrouble(err.Error())
			return err
		case errors.Is(err, errChangedAgain):
			continue // look again at once
		case err != nil && !errors.Is(err, subnet.ErrUnavailable): // an outage is logged by the tracker
			m.log.Warn("lease keeper: etcd error, retrying", "key", k.key, "error", err)
		}
		if err != nil && !sleep(ctx, retryDelay) {
			return nil
		}
	}
}

// LeaseHeld is nil while this host's lease is in etcd as it was written,
// else an error saying what is wrong with it (for /readyz). Before
// KeepLease has looked, the lease just acquired counts as held.
func (m *Manager) LeaseHeld() error {
	if p := m.leaseTrouble.Load(); p != nil && *p != "" {
		return errors.New(*p)
	}
	return nil
}

func (m *Manager) setLeaseTrouble(s string) { m.leaseTrouble.Store(&s) }

type keeper struct {
	m     *Manager
	cfg   *subnet.Config
	lease subnet.Lease
	key   string
	value string
}

// renewAt is when the next renewal is due.
func (k *keeper) renewAt() time.Time {
	margin := k.m.margin
	if margin >= k.m.ttl {
		margin = k.m.ttl * 2 / 3 // renew a third of the way through
	}
	return k.lease.Expiration.Add(-margin)
}

// intact reports whether kv is our lease as we wrote it: on our etcd
// lease, with our attributes.
func (k *keeper) intact(kv *mvccpb.KeyValue) bool {
	if kv == nil || kv.Lease != k.lease.LeaseID {
		return false
	}
	a, err := subnet.ParseLeaseAttrs(kv.Value)
	return err == nil && a.Equal(k.lease.Attrs)
}

// check reads the key: errChanged when it is not intact.
func (k *keeper) check(ctx context.Context) (rev int64, err error) {
	resp, err := k.m.get(ctx, k.key)
	if err != nil {
		return 0, err
	}
	if len(resp.Kvs) == 0 || !k.intact(resp.Kvs[0]) {
		return 0, errChanged
	}
	return resp.Header.Revision, nil
}

// run checks that the key is still ours, then renews on schedule, watches
// the key and reads it every CheckInterval until it changes (errChanged),
// ctx ends, or etcd fails (any other error; the caller retries).
func (k *keeper) run(ctx context.Context) error {
	rev, err := k.check(ctx)
	if err != nil {
		return err
	}
	// A watch stream of its own (the client shares one per metadata),
	// from the revision read rather than the next: etcd answers a
	// progress request only when every watch of the stream has reached
	// its start revision, so in a quiet cluster a watch from rev+1, or
	// the peer watcher's, would leave every request unanswered. Replaying
	// revision rev is harmless: the read saw the key as it was after it.
	wctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(clientv3.WithRequireLeader(ctx), "flannelu-watch", "own-lease"))
	defer cancel()
	// The client's Watch blocks until etcd answers; made aside, it
	// cannot keep the periodic read from noticing that etcd is gone.
	made := make(chan clientv3.WatchChan, 1)
	go func() { made <- k.m.cli.Watch(wctx, k.key, clientv3.WithRev(rev)) }()
	var wch clientv3.WatchChan // nil, so never ready, until made
	renew := time.NewTimer(time.Until(k.renewAt()))
	defer renew.Stop()
	renewC := renew.C
	if k.lease.LeaseID == 0 {
		renewC = nil // a reservation never expires
	}
	// Between reads, liveness comes from a progress request on the open
	// watch stream: etcd answers with an empty response, no key read and
	// no call of its own (a read every CheckInterval is 360 calls per node
	// per hour at the default: 500 range reads/s at 5,000 nodes). The
	// probe ticks twice per CheckInterval; a request still unanswered at
	// the next tick, or no watch yet, makes that tick a read, which
	// notices an outage as before, within a CheckInterval.
	probe := time.NewTicker(max(k.m.checkEvery/2, time.Millisecond))
	defer probe.Stop()
	asked := false // a progress request waits for its answer
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-renewC:
			if err := k.renew(ctx); err != nil {
				return err
			}
			renew.Reset(time.Until(k.renewAt()))
		case wch = <-made:
			k.m.log.Debug(keeperWatching, "key", k.key, "lease", k.lease.LeaseID, "fromRevision", rev)
		case <-probe.C:
			if wch != nil && !asked && k.askProgress(wctx) {
				asked = true
				continue
			}
			asked = false
			if _, err := k.check(ctx); err != nil {
				return err
			}
		case wresp, ok := <-wch:
			if !ok {
				return errors.New("watch closed")
			}
			if err := wresp.Err(); err != nil {
				return err
			}
			if wresp.IsProgressNotify() {
				asked = false
				k.m.reach.OK()
				continue
			}
			for _, ev := range wresp.Events {
				if ev.Type == mvccpb.DELETE || !k.intact(ev.Kv) {
					return errChanged
				}
			}
		}
	}
}

// askProgress sends a progress request on the keeper's watch stream;
// false when the client does not take it at once. While etcd is down the
// client redials the stream and takes no request: the send would wait
// for etcd (measured: the keeper never read again, the outage was never
// noticed), so it is given a fraction of the probe period.
func (k *keeper) askProgress(wctx context.Context) bool {
	ctx, cancel := context.WithTimeout(wctx, min(max(k.m.checkEvery/4, 10*time.Millisecond), time.Second))
	defer cancel()
	return k.m.cli.RequestProgress(ctx) == nil
}

func (k *keeper) renew(ctx context.Context) error {
	var resp *clientv3.LeaseKeepAliveResponse
	err := k.m.do(ctx, func(ctx context.Context) (err error) {
		resp, err = k.m.cli.KeepAliveOnce(ctx, clientv3.LeaseID(k.lease.LeaseID))
		return err
	})
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return errChanged // revoked or expired: the key went with it
	}
	if err != nil {
		return fmt.Errorf("renew lease: %w", err)
	}
	k.lease.Expiration = time.Now().Add(time.Duration(resp.TTL) * time.Second)
	k.m.log.Info(leaseRenewed, "subnet", k.lease.Subnet, "ipv6Subnet", k.lease.IPv6Subnet, "expires", k.lease.Expiration)
	return nil
}

// sleep waits d or until ctx is done; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
