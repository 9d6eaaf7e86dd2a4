// Package rules keeps flanneld's masquerade (--ip-masq) and forward
// (--iptables-forward-rules) rules with the tool the network config
// chooses, as flannel's pkg/trafficmngr does: iptables and ip6tables
// (package iptables), or nftables ("EnableNFTables": true; package
// nftables). Either way a Manager sets the rules up before subnet.env is
// written, removes the rules the other tool holds from an earlier start
// (switching modes leaves nothing behind), checks them every resync period
// and restores what went missing, and leaves them in place on exit, so
// that a restart keeps traffic flowing.
package rules

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/flannelu/flannelu/internal/metrics"
)

// Family is one address family's networks; an invalid Network means the
// family is off.
type Family struct {
	Network, Subnet netip.Prefix // the network config's and this host's lease
	// PrevNetwork and PrevSubnet are the previous subnet.env's, for the
	// log when they changed: either tool replaces the rules built for
	// them with the current ones (iptables rule by rule, nftables its
	// chains whole).
	PrevNetwork, PrevSubnet netip.Prefix
}

// Options choose the tool and the rules.
type Options struct {
	NFTables    bool // "EnableNFTables": true
	Masq        bool // --ip-masq
	Forward     bool // --iptables-forward-rules
	RandomFully bool // masquerade fully-random where the tool has it (not --ip-masq-fully-random-disable)
	IPv4, IPv6  Family
	Resync      time.Duration // --iptables-resync
	Logger      *slog.Logger
	Metrics     *metrics.Registry
}

// Manager keeps the rules of one tool.
type Manager interface {
	// Setup removes the other tool's flannel rules and sets this tool's
	// up. A failure is logged and returned, and InPlace reports it until
	// a resync succeeds.
	Setup(ctx context.Context) error
	// Run checks the rules every resync period and restores them until
	// ctx ends.
	Run(ctx context.Context)
	// InPlace is nil while the last setup or check left every rule in
	// place.
	InPlace() error
}

// New returns the Manager of the tool o chooses. It fails only in
// nftables mode without a usable nft, as flanneld does.
func New(o Options) (Manager, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Resync <= 0 {
		o.Resync = 5 * time.Second
	}
	if o.NFTables {
		return newNFTables(o)
	}
	return newIPTables(o), nil
}

// errNotSetUp is InPlace before the first Setup.
var errNotSetUp = errors.New("not set up yet")

// state is the outcome of the last setup or check, for InPlace.
type state struct{ last atomic.Pointer[error] }

func (s *state) set(err error) { s.last.Store(&err) }

func (s *state) InPlace() error {
	if p := s.last.Load(); p != nil {
		return *p
	}
	return errNotSetUp
}

// every runs check every period until ctx ends.
func every(ctx context.Context, period time.Duration, check func()) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			check()
		}
	}
}
