package subnet

import (
	"context"
	"errors"
	"net/netip"
)

// Errors every store returns for the same condition, which the daemon
// tells apart.
var (
	// ErrNoConfig: the network config does not exist (yet).
	ErrNoConfig = errors.New("subnet: no network config in etcd")
	// ErrUnavailable: the store did not answer (unreachable, no leader,
	// timed out). The daemon waits and asks again; the outage itself is
	// logged by the store, once when it starts, once a minute and once
	// when it ends.
	ErrUnavailable = errors.New("subnet: store unavailable")
)

// ErrHostRemoved: the store removed this host from the network for good
// (its Kubernetes node was deleted). KeepLease returns an error matching
// it; the daemon then withdraws the peer entries its backend made (routes,
// neighbours, fdb entries) before it exits, since no lease of its will
// come back to keep them current.
var ErrHostRemoved = errors.New("this host was removed from the network")

// Store is where the network config and the hosts' leases live: etcd
// (package etcd, flanneld's default) or the Kubernetes API (package kube,
// flanneld's --kube-subnet-mgr). The daemon, the backends, the route table
// and subnet.env see only this contract and the types of this package, so
// they never know which store feeds them. Implementations are safe for
// concurrent use.
type Store interface {
	// GetConfig reads and validates the network config. A missing config
	// is an error matching ErrNoConfig; the daemon logs it and asks again.
	GetConfig(ctx context.Context) (*Config, error)
	// AcquireLease returns this host's lease, publishing attrs (public IP,
	// backend type and data) for the peers to read. prev is the subnet of
	// the previous subnet.env (zero when none), a hint a store that chooses
	// subnets may honour.
	AcquireLease(ctx context.Context, cfg *Config, attrs LeaseAttrs, prev netip.Prefix) (Lease, error)
	// KeepLease holds the lease until ctx ends (renewing it, or restoring
	// what was published when someone changed it) and returns nil then; any
	// other return means the lease is lost for good (ErrHostRemoved: and
	// the host with it).
	KeepLease(ctx context.Context, cfg *Config, lease Lease) error
	// WatchLeases calls handle first with one batch of EventAdded for every
	// lease that exists (possibly empty: the first call says "synced"),
	// then with the changes as they happen, never losing or repeating one
	// across reconnects. handle runs on one goroutine at a time. It returns
	// nil when ctx ends. Events carry the store's name of the lease (Key)
	// and its creation order (Lease.Created) where the store has them. A
	// value that cannot be parsed is skipped and counted; if the key held
	// a valid lease, that lease stays reported (no EventRemoved) until the
	// key is deleted or valid again. Leases that parse but make no sense
	// (outside the network, overlapping) are reported as they are: the
	// daemon's Validator judges them, the same way for every store.
	WatchLeases(ctx context.Context, handle func([]Event)) error
	// MalformedLeases counts peer leases skipped because they could not be
	// parsed, once per stored revision.
	MalformedLeases() uint64
	// LeaseKey is the name (Event.Key) under which WatchLeases reports
	// this host's lease own: its etcd key, its Kubernetes node's name.
	// Any other key with the same subnets is a peer claiming them.
	LeaseKey(own Lease) string
}
