package subnet

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// retryDelay spaces out retries while etcd is unreachable.
const retryDelay = time.Second

// keeperWatching is logged (debug) once the keeper has found the key its
// own and watches it: from here on no change to the key goes unseen.
const keeperWatching = "lease keeper watching"

// leaseRenewed is logged (info) on every renewal.
const leaseRenewed = "renewed subnet lease"

// errLost is internal: our key or etcd lease is gone.
var errLost = errors.New("lease lost")

// KeepLease keeps lease alive until ctx is done, then returns nil without
// deleting or revoking it (a restarted host gets the same subnet back).
// It renews RenewMargin before expiry (at a third of the TTL when the
// margin is not shorter than the TTL) and watches the lease's key. When the
// lease is lost (revoked, expired, deleted) it takes the same subnet again
// if it is free; if another host holds it, it returns an error matching
// ErrLeaseTaken. A reservation (LeaseID 0) needs no renewal and is only
// watched.
func (m *Manager) KeepLease(ctx context.Context, cfg *Config, lease Lease) error {
	value, err := MarshalLeaseAttrs(lease.Attrs)
	if err != nil {
		return err
	}
	k := &keeper{m: m, cfg: cfg, lease: lease, key: m.key(lease.Subnet, lease.IPv6Subnet), value: string(value)}
	for {
		err := k.run(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, errLost):
			if err := k.retake(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
		default:
			m.log.Warn("lease keeper: etcd error, retrying", "key", k.key, "error", err)
			if !sleep(ctx, retryDelay) {
				return nil
			}
		}
	}
}

type keeper struct {
	m     *Manager
	cfg   *Config
	lease Lease
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

// run checks that the key is still ours, then renews on schedule and
// watches the key until the lease is lost (errLost), ctx ends, or etcd
// fails (any other error; the caller retries).
func (k *keeper) run(ctx context.Context) error {
	resp, err := k.m.cli.Get(ctx, k.key)
	if err != nil {
		return err
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].Lease != k.lease.LeaseID {
		return errLost
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := k.m.cli.Watch(wctx, k.key, clientv3.WithRev(resp.Header.Revision+1))
	k.m.log.Debug(keeperWatching, "key", k.key, "lease", k.lease.LeaseID, "fromRevision", resp.Header.Revision+1)
	t := time.NewTimer(time.Until(k.renewAt()))
	defer t.Stop()
	timer := t.C
	if k.lease.LeaseID == 0 {
		timer = nil // a reservation never expires
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer:
			if err := k.renew(ctx); err != nil {
				return err
			}
			t.Reset(time.Until(k.renewAt()))
		case wresp, ok := <-wch:
			if !ok {
				return errors.New("watch closed")
			}
			if err := wresp.Err(); err != nil {
				return err
			}
			for _, ev := range wresp.Events {
				if ev.Type == mvccpb.DELETE || ev.Kv.Lease != k.lease.LeaseID {
					return errLost
				}
			}
		}
	}
}

func (k *keeper) renew(ctx context.Context) error {
	resp, err := k.m.cli.KeepAliveOnce(ctx, clientv3.LeaseID(k.lease.LeaseID))
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return errLost
	}
	if err != nil {
		return fmt.Errorf("renew lease: %w", err)
	}
	k.lease.Expiration = time.Now().Add(time.Duration(resp.TTL) * time.Second)
	k.m.log.Info(leaseRenewed, "subnet", k.lease.Subnet, "ipv6Subnet", k.lease.IPv6Subnet, "expires", k.lease.Expiration)
	return nil
}

// retake writes the same subnet again on a new etcd lease if its key is
// free, or reports who holds it.
func (k *keeper) retake(ctx context.Context) error {
	grant, err := k.m.cli.Grant(ctx, int64(k.m.ttl/time.Second))
	if err != nil {
		return fmt.Errorf("subnet: lease on %s lost and cannot grant a new one: %w", k.lease.Subnet, err)
	}
	resp, err := k.m.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.Version(k.key), "=", 0)).
		Then(clientv3.OpPut(k.key, k.value, clientv3.WithLease(grant.ID))).
		Else(clientv3.OpGet(k.key)).Commit()
	if err != nil {
		k.m.cli.Revoke(context.WithoutCancel(ctx), grant.ID)
		return fmt.Errorf("subnet: lease on %s lost, retaking it: %w", k.lease.Subnet, err)
	}
	if resp.Succeeded {
		k.lease.LeaseID = int64(grant.ID)
		k.lease.Expiration = time.Now().Add(time.Duration(grant.TTL) * time.Second)
		k.m.log.Warn("subnet lease was lost; took the same subnet again", "subnet", k.lease.Subnet, "ipv6Subnet", k.lease.IPv6Subnet)
		return nil
	}
	k.m.cli.Revoke(context.WithoutCancel(ctx), grant.ID)
	holder := "an unparsable value"
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		if a, err := ParseLeaseAttrs(kvs[0].Value); err == nil {
			holder = "PublicIP " + a.PublicIP.String()
		}
		if kvs[0].Lease == k.lease.LeaseID {
			return nil // raced with ourselves: the key is ours again
		}
	}
	return fmt.Errorf("%w: subnet %s is now held by %s", ErrLeaseTaken, k.lease.Subnet, holder)
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
