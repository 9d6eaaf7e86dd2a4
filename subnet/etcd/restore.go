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
)

// restore looks at what our key holds now and writes our value back,
// unless another live host holds it (ErrLeaseTaken). It returns nil once
// the key is ours again.
func (k *keeper) restore(ctx context.Context) error {
	resp, err := k.m.get(ctx, k.key)
	if err != nil {
		return err
	}
	var kv *mvccpb.KeyValue
	if len(resp.Kvs) > 0 {
		kv = resp.Kvs[0]
	}
	if k.intact(kv) {
		return nil // changed and changed back
	}
	holder, taken, err := k.heldByAnother(ctx, kv)
	switch {
	case err != nil:
		return err
	case taken:
		return fmt.Errorf("%w: subnet %s is now held by %s", ErrLeaseTaken, k.lease.Subnet, holder)
	}
	k.m.log.Warn("own subnet lease changed in etcd; writing it back", k.found(kv)...)
	if err := k.writeBack(ctx, kv); err != nil {
		return err
	}
	k.m.log.Info("own subnet lease restored", "key", k.key, "subnet", k.lease.Subnet, "lease", k.lease.LeaseID)
	return nil
}

// found describes what the key held, for the log (the handler cuts a long
// value).
func (k *keeper) found(kv *mvccpb.KeyValue) []any {
	attrs := []any{"key", k.key, "subnet", k.lease.Subnet}
	if kv == nil {
		return append(attrs, "found", "deleted (or its etcd lease expired or was revoked)")
	}
	return append(attrs, "found", string(kv.Value), "found_etcd_lease", kv.Lease, "our_etcd_lease", k.lease.LeaseID)
}

// heldByAnother reports whether kv is another live host's lease: a value
// naming another address, on a live etcd lease that is not ours; or, for
// a reservation we hold, rewritten for another address. An error (etcd
// did not answer whether that lease lives) is retried, never taken for a
// verdict: exiting on a hiccup would be worse than waiting.
func (k *keeper) heldByAnother(ctx context.Context, kv *mvccpb.KeyValue) (holder string, taken bool, err error) {
	if kv == nil {
		return "", false, nil
	}
	a, perr := subnet.ParseLeaseAttrs(kv.Value)
	if perr != nil || a.PublicIP == k.lease.Attrs.PublicIP && a.PublicIPv6 == k.lease.Attrs.PublicIPv6 {
		return "", false, nil // garbage, or our own address: ours to write back
	}
	holder = fmt.Sprintf("PublicIP %v (etcd lease %x)", a.PublicIP, kv.Lease)
	if a.PublicIPv6.IsValid() {
		holder = fmt.Sprintf("PublicIP %v PublicIPv6 %v (etcd lease %x)", a.PublicIP, a.PublicIPv6, kv.Lease)
	}
	if k.lease.LeaseID == 0 {
		return holder, true, nil // our reservation, moved by the operator
	}
	if kv.Lease == 0 || kv.Lease == k.lease.LeaseID {
		return "", false, nil
	}
	var ttl *clientv3.LeaseTimeToLiveResponse
	if err := k.m.do(ctx, func(ctx context.Context) (err error) {
		ttl, err = k.m.cli.TimeToLive(ctx, clientv3.LeaseID(kv.Lease))
		return err
	}); err != nil {
		return "", false, fmt.Errorf("is etcd lease %x of %s alive: %w", kv.Lease, k.key, err)
	}
	return holder, ttl.TTL > 0, nil
}

// writeBack puts our value on our etcd lease, guarded on the key being
// as we read it; when our etcd lease is gone it grants a new one.
func (k *keeper) writeBack(ctx context.Context, kv *mvccpb.KeyValue) error {
	guard := clientv3.Compare(clientv3.Version(k.key), "=", 0)
	if kv != nil {
		guard = clientv3.Compare(clientv3.ModRevision(k.key), "=", kv.ModRevision)
	} else if k.lease.LeaseID == 0 {
		// Our reservation was deleted: the operator released it, so
		// the subnet is taken back as an ordinary lease.
		if err := k.newLease(ctx); err != nil {
			return err
		}
	}
	for range 2 {
		resp, err := k.m.txn(ctx, []clientv3.Cmp{guard}, []clientv3.Op{clientv3.OpPut(k.key, k.value, clientv3.WithLease(clientv3.LeaseID(k.lease.LeaseID)))})
		switch {
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			if err := k.newLease(ctx); err != nil {
				return err
			}
			continue
		case err != nil:
			return fmt.Errorf("write back lease %s: %w", k.key, err)
		case !resp.Succeeded:
			return errChangedAgain
		}
		return nil
	}
	return fmt.Errorf("write back lease %s: new etcd lease %x not found", k.key, k.lease.LeaseID)
}

// errChangedAgain: the key changed between our read and our write; the
// keeper looks again.
var errChangedAgain = errors.New("own lease changed again while being restored")

// newLease replaces our expired or revoked etcd lease.
func (k *keeper) newLease(ctx context.Context) error {
	grant, err := k.m.grant(ctx)
	if err != nil {
		return fmt.Errorf("subnet: etcd lease of %s gone and cannot grant a new one: %w", k.lease.Subnet, err)
	}
	k.lease.LeaseID = int64(grant.ID)
	k.lease.Expiration = time.Now().Add(time.Duration(grant.TTL) * time.Second)
	return nil
}
