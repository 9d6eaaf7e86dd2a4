package etcd

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/flannelu/flannelu/subnet"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// acquireAttempts bounds the retries after losing a race for a subnet;
// with random choice a host rarely loses more than a few.
const acquireAttempts = 30

// AcquireLease obtains this host's subnet lease, in flanneld's order of
// preference: (a) an existing lease with our public IP that fits cfg,
// rebound to a fresh etcd lease (a reservation with our IP is used as is,
// never rewritten); a non-reservation lease with our IP that no longer fits
// is deleted; (b) prev, the subnet from the old subnet.env, if it fits and
// is free; (c) a random free subnet between SubnetMin and SubnetMax. A full
// range gives an error matching ErrNoFreeSubnet.
func (m *Manager) AcquireLease(ctx context.Context, cfg *subnet.Config, attrs subnet.LeaseAttrs, prev netip.Prefix) (subnet.Lease, error) {
	value, err := subnet.MarshalLeaseAttrs(attrs)
	if err != nil {
		return subnet.Lease{}, err
	}
	a := &acquirer{m: m, cfg: cfg, attrs: attrs, value: string(value), prev: prev}
	defer a.releaseGrant()
	for attempt := 1; attempt <= acquireAttempts; attempt++ {
		l, done, err := a.try(ctx)
		if done || err != nil {
			return l, err
		}
		// Lost a race: another host wrote the key between our list and
		// our transaction. Back off with jitter so racers spread out.
		d := time.Duration(rand.Int64N(int64(20*time.Millisecond))) + time.Duration(attempt)*5*time.Millisecond
		select {
		case <-ctx.Done():
			return subnet.Lease{}, ctx.Err()
		case <-time.After(d):
		}
	}
	return subnet.Lease{}, fmt.Errorf("subnet: gave up after %d lost races for a subnet of %s", acquireAttempts, cfg.Network)
}

// acquirer holds one AcquireLease call's state: the value to write and an
// etcd lease granted once and reused across attempts.
type acquirer struct {
	m       *Manager
	cfg     *subnet.Config
	attrs   subnet.LeaseAttrs
	value   string
	prev    netip.Prefix
	grantID clientv3.LeaseID
	granted time.Time
	ttl     int64
}

// try lists the leases and makes one attempt; done is false after a lost race.
func (a *acquirer) try(ctx context.Context) (l subnet.Lease, done bool, err error) {
	resp, err := a.m.get(ctx, a.m.subnetsDir, clientv3.WithPrefix())
	if err != nil {
		return subnet.Lease{}, false, fmt.Errorf("subnet: list leases: %w", err)
	}
	if l, found, ok, err := a.reuseOwn(ctx, resp.Kvs); found || err != nil {
		return l, ok, err
	}
	taken := a.takenIndexes(resp.Kvs)
	if i, ok := a.prevIndex(); ok && !taken[i] {
		return a.create(ctx, i)
	}
	i, err := a.randomFree(taken)
	if err != nil {
		return subnet.Lease{}, false, err
	}
	return a.create(ctx, i)
}

func (a *acquirer) ours(l subnet.Lease) bool {
	if a.attrs.PublicIP.IsValid() {
		return l.Attrs.PublicIP == a.attrs.PublicIP
	}
	return l.Attrs.PublicIPv6 == a.attrs.PublicIPv6
}

// reuseOwn handles case (a). found reports that a lease with our IP was
// acted on (ok then says whether that succeeded or lost a race).
func (a *acquirer) reuseOwn(ctx context.Context, kvs []*mvccpb.KeyValue) (l subnet.Lease, found, ok bool, err error) {
	for _, kv := range kvs {
		old, valid := a.m.validLease(kv)
		if !valid || !a.ours(old) {
			continue
		}
		fits := a.cfg.Fits(old.Subnet, old.IPv6Subnet)
		switch {
		case kv.Lease == 0 && fits:
			a.m.log.Info("using the subnet reserved for this host", "subnet", old.Subnet, "ipv6Subnet", old.IPv6Subnet)
			return old, true, true, nil
		case kv.Lease == 0:
			a.m.log.Warn("ignoring a reservation for this host outside the configured range", "key", string(kv.Key))
		case fits:
			l, ok, err := a.rebind(ctx, kv, old)
			return l, true, ok, err
		default:
			// The network was reconfigured: flanneld deletes our old lease.
			a.m.log.Info("deleting this host's lease outside the configured range", "key", string(kv.Key))
			if _, err := a.m.txn(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision)},
				[]clientv3.Op{clientv3.OpDelete(string(kv.Key))}); err != nil {
				return subnet.Lease{}, true, false, fmt.Errorf("subnet: delete stale lease %s: %w", kv.Key, err)
			}
		}
	}
	return subnet.Lease{}, false, false, nil
}

// rebind rewrites our existing lease with the current attributes on a
// fresh etcd lease, guarded on ModRevision so a concurrent change wins.
func (a *acquirer) rebind(ctx context.Context, kv *mvccpb.KeyValue, old subnet.Lease) (subnet.Lease, bool, error) {
	if err := a.grant(ctx); err != nil {
		return subnet.Lease{}, false, err
	}
	key := string(kv.Key)
	resp, err := a.m.txn(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)},
		[]clientv3.Op{clientv3.OpPut(key, a.value, clientv3.WithLease(a.grantID))})
	if err != nil {
		return subnet.Lease{}, false, fmt.Errorf("subnet: renew lease %s: %w", key, err)
	}
	if !resp.Succeeded {
		return subnet.Lease{}, false, nil
	}
	a.m.log.Info("reusing this host's existing lease", "subnet", old.Subnet, "ipv6Subnet", old.IPv6Subnet)
	return a.lease(old.Subnet, old.IPv6Subnet), true, nil
}

// takenIndexes marks every subnet held by a key, whatever its value: a key
// with a malformed value or no etcd lease (a reservation) is still taken.
// A key whose IPv4 or IPv6 half collides with a subnet marks it taken too.
func (a *acquirer) takenIndexes(kvs []*mvccpb.KeyValue) map[int]bool {
	taken := make(map[int]bool, len(kvs))
	for _, kv := range kvs {
		sn, sn6, err := subnet.ParseSubnetKey(string(kv.Key))
		if err != nil {
			a.m.validLease(kv) // counts and logs the bad key
			continue
		}
		if i, ok := a.cfg.SubnetIndex(sn); ok {
			taken[i] = true
		}
		if i, ok := a.cfg.SubnetIndex(sn6); ok {
			taken[i] = true
		}
	}
	return taken
}

// prevIndex is case (b): the old subnet.env's subnet, if in range.
func (a *acquirer) prevIndex() (int, bool) {
	if !a.prev.IsValid() {
		return 0, false
	}
	return a.cfg.SubnetIndex(a.prev.Masked())
}

// randomFree is case (c): a uniformly random index not in taken.
func (a *acquirer) randomFree(taken map[int]bool) (int, error) {
	n := a.cfg.SubnetCount()
	if len(taken) < n {
		// Random probes find a free subnet quickly unless the range is
		// nearly full; then fall back to listing the free ones.
		for range 64 {
			if i := rand.IntN(n); !taken[i] {
				return i, nil
			}
		}
		if n <= 1<<20 {
			free := make([]int, 0, n-len(taken))
			for i := range n {
				if !taken[i] {
					free = append(free, i)
				}
			}
			return free[rand.IntN(len(free))], nil
		}
	}
	lo, lo6 := a.cfg.SubnetAt(0)
	hi, hi6 := a.cfg.SubnetAt(n - 1)
	return 0, fmt.Errorf("%w in network %s %s: all %d subnets from %s to %s are taken",
		ErrNoFreeSubnet, a.cfg.Network, a.cfg.IPv6Network, n, firstValid(lo, lo6), firstValid(hi, hi6))
}

func firstValid(p, q netip.Prefix) netip.Prefix {
	if p.IsValid() {
		return p
	}
	return q
}

// create writes a new lease for index i if its key does not exist yet.
func (a *acquirer) create(ctx context.Context, i int) (subnet.Lease, bool, error) {
	if err := a.grant(ctx); err != nil {
		return subnet.Lease{}, false, err
	}
	sn, sn6 := a.cfg.SubnetAt(i)
	key := a.m.key(sn, sn6)
	resp, err := a.m.txn(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.Version(key), "=", 0)},
		[]clientv3.Op{clientv3.OpPut(key, a.value, clientv3.WithLease(a.grantID))})
	if err != nil {
		return subnet.Lease{}, false, fmt.Errorf("subnet: create lease %s: %w", key, err)
	}
	if !resp.Succeeded {
		return subnet.Lease{}, false, nil
	}
	a.m.log.Info("acquired a new lease", "subnet", sn, "ipv6Subnet", sn6, "ttl", a.m.ttl)
	return a.lease(sn, sn6), true, nil
}

// grant obtains the etcd lease once per AcquireLease call.
func (a *acquirer) grant(ctx context.Context) error {
	if a.grantID != 0 {
		return nil
	}
	resp, err := a.m.grant(ctx)
	if err != nil {
		return fmt.Errorf("subnet: grant etcd lease: %w", err)
	}
	a.grantID, a.granted, a.ttl = resp.ID, time.Now(), resp.TTL
	return nil
}

func (a *acquirer) lease(sn, sn6 netip.Prefix) subnet.Lease {
	l := subnet.Lease{Subnet: sn, IPv6Subnet: sn6, Attrs: a.attrs, LeaseID: int64(a.grantID),
		Expiration: a.granted.Add(time.Duration(a.ttl) * time.Second)}
	a.grantID = 0 // now owned by the returned lease
	return l
}

// releaseGrant revokes a granted etcd lease that no key ended up using.
func (a *acquirer) releaseGrant() {
	if a.grantID == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := a.m.cli.Revoke(ctx, a.grantID); err != nil && !errors.Is(err, context.Canceled) {
		a.m.log.Debug("revoking unused etcd lease", "lease", int64(a.grantID), "error", err)
	}
}
