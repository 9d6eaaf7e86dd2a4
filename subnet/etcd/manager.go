package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannelu/flannelu/internal/outage"
	"github.com/flannelu/flannelu/subnet"
)

var (
	// ErrNoFreeSubnet: every subnet of the configured range is leased or reserved.
	ErrNoFreeSubnet = errors.New("subnet: no free subnet")
	// ErrLeaseTaken: our lease was lost and another host now holds the subnet.
	ErrLeaseTaken = errors.New("subnet: lease taken by another host")
)

// subnetsDir is where leases live under the etcd prefix.
const subnetsDir = "/subnets/"

// Options tune a Manager; the zero value is flanneld's defaults.
type Options struct {
	Prefix      string        // etcd prefix, default /coreos.com/network
	LeaseTTL    time.Duration // etcd lease TTL, default 24h
	RenewMargin time.Duration // renew this long before expiry, default 60m
	Logger      *slog.Logger  // default slog.Default()
	// RequestTimeout bounds each etcd request, default 5s.
	RequestTimeout time.Duration
	// CheckInterval is how often the lease keeper reads its key, which
	// is how a run-time etcd outage is noticed; default 10s.
	CheckInterval time.Duration
}

// Manager reads the network config and owns this host's lease in etcd, in
// flanneld's schema. Its methods are safe for concurrent use.
type Manager struct {
	cli        *clientv3.Client
	prefix     string
	subnetsDir string
	ttl        time.Duration
	margin     time.Duration
	reqTimeout time.Duration
	checkEvery time.Duration
	log        *slog.Logger
	reach      *outage.Tracker // fed by every request
	// leaseTrouble says what is wrong with the kept lease; "" or nil
	// while it is held.
	leaseTrouble atomic.Pointer[string]

	malformed atomic.Uint64
	warnMu    sync.Mutex
	warned    map[string]int64 // key -> ModRevision already reported malformed

	// testHookAfterList, when set, runs in WatchLeases between a list and
	// the watch that follows it, so tests can force a compaction there.
	testHookAfterList func(rev int64)
}

// NewManager returns a Manager using cli, which the caller keeps and closes.
func NewManager(cli *clientv3.Client, opts Options) *Manager {
	if opts.Prefix == "" {
		opts.Prefix = "/coreos.com/network"
	}
	if opts.LeaseTTL <= 0 {
		opts.LeaseTTL = 24 * time.Hour
	}
	if opts.RenewMargin <= 0 {
		opts.RenewMargin = 60 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = defaultRequestTimeout
	}
	if opts.CheckInterval <= 0 {
		opts.CheckInterval = defaultCheckInterval
	}
	prefix := strings.TrimSuffix(opts.Prefix, "/")
	return &Manager{
		cli:        cli,
		prefix:     prefix,
		subnetsDir: prefix + subnetsDir,
		ttl:        opts.LeaseTTL,
		margin:     opts.RenewMargin,
		reqTimeout: opts.RequestTimeout,
		checkEvery: opts.CheckInterval,
		log:        opts.Logger,
		reach:      outage.New(outage.Options{What: "etcd", Where: strings.Join(cli.Endpoints(), ","), Logger: opts.Logger}),
		warned:     make(map[string]int64),
	}
}

// GetConfig reads and validates <prefix>/config. A missing key gives an
// error matching ErrNoConfig; an invalid one ParseConfig's error.
func (m *Manager) GetConfig(ctx context.Context) (*subnet.Config, error) {
	key := m.prefix + "/config"
	resp, err := m.get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("subnet: read %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("%w: %s is missing", subnet.ErrNoConfig, key)
	}
	c, err := subnet.ParseConfig(resp.Kvs[0].Value)
	if err != nil {
		return nil, fmt.Errorf("subnet: %s: %w", key, err)
	}
	return c, nil
}

// MalformedLeases counts the lease keys and values under <prefix>/subnets/
// that were skipped because they could not be parsed, once per key and
// revision.
func (m *Manager) MalformedLeases() uint64 { return m.malformed.Load() }

// LeaseKey is own's etcd key, as WatchLeases reports it.
func (m *Manager) LeaseKey(own subnet.Lease) string { return m.key(own.Subnet, own.IPv6Subnet) }

func (m *Manager) key(sn, sn6 netip.Prefix) string {
	return m.subnetsDir + subnet.MakeSubnetKey(sn, sn6)
}

// parseKV turns a stored lease into a Lease. Expiration is left zero: only
// the lease's owner tracks it; LeaseID 0 marks a reservation.
func parseKV(kv *mvccpb.KeyValue) (subnet.Lease, error) {
	sn, sn6, err := subnet.ParseSubnetKey(string(kv.Key))
	if err != nil {
		return subnet.Lease{}, err
	}
	attrs, err := subnet.ParseLeaseAttrs(kv.Value)
	if err != nil {
		return subnet.Lease{}, fmt.Errorf("%s: %w", kv.Key, err)
	}
	return subnet.Lease{Subnet: sn, IPv6Subnet: sn6, Attrs: attrs, LeaseID: kv.Lease, Created: kv.CreateRevision}, nil
}

// validLease is parseKV that counts and logs (once per key and revision) a
// malformed lease instead of returning its error.
func (m *Manager) validLease(kv *mvccpb.KeyValue) (subnet.Lease, bool) {
	l, err := parseKV(kv)
	if err == nil {
		return l, true
	}
	m.warnMu.Lock()
	seen := m.warned[string(kv.Key)] == kv.ModRevision
	if !seen {
		m.warned[string(kv.Key)] = kv.ModRevision
	}
	m.warnMu.Unlock()
	if !seen {
		m.malformed.Add(1)
		m.log.Warn("skipping malformed lease", "key", string(kv.Key), "revision", kv.ModRevision, "error", err)
	}
	return subnet.Lease{}, false
}
