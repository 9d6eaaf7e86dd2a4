package rules

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/flannelu/flannelu/internal/metrics"
	"github.com/flannelu/flannelu/internal/rules/iptables"
	"github.com/flannelu/flannelu/internal/rules/nftables"
)

// nftManager keeps flannel's nftables tables.
type nftManager struct {
	state
	o        Options
	tables   *nftables.Tables
	failures *metrics.Counter
}

func newNFTables(o Options) (*nftManager, error) {
	fam := func(f Family) nftables.Family { return nftables.Family{Network: f.Network, Subnet: f.Subnet} }
	t, err := nftables.New(nftables.Options{IPv4: fam(o.IPv4), IPv6: fam(o.IPv6), Masq: o.Masq, Forward: o.Forward,
		RandomFully: o.RandomFully, Logger: o.Logger})
	if err != nil {
		return nil, fmt.Errorf("EnableNFTables: %w", err)
	}
	failures := o.Metrics.Counter("flannelu_nftables_resync_failures_total",
		"Set-ups and checks of the nftables rules flannelu keeps (EnableNFTables: --ip-masq, --iptables-forward-rules) that failed.")
	return &nftManager{o: o, tables: t, failures: failures}, nil
}

func (m *nftManager) Setup(ctx context.Context) error {
	m.o.Logger.Info("flannel rules in nftables", "tables", nftables.TableIPv4+", "+nftables.TableIPv6)
	purgeIPTables(m.o.Logger)
	return m.record(m.tables.Setup(ctx))
}

func (m *nftManager) Run(ctx context.Context) {
	every(ctx, m.o.Resync, func() {
		if err := m.tables.Check(ctx); ctx.Err() == nil {
			m.record(err) //nolint:errcheck // recorded
		}
	})
}

func (m *nftManager) record(err error) error {
	if err != nil {
		m.failures.Add(1)
		m.o.Logger.Error("nftables rules not in place", "error", err)
	}
	m.set(err)
	return err
}

// purgeIPTables removes flannel's iptables chains and the jumps to them,
// in iptables and ip6tables, where an iptables-mode start left them.
// flanneld v0.28's clean-up tries the same but deletes the chains while the
// jumps still refer to them (and looks for FLANNEL-FWD in the nat table),
// so its rules stay; flannelu deletes the jumps first. A missing tool has
// nothing to remove.
func purgeIPTables(log *slog.Logger) {
	for _, v6 := range []bool{false, true} {
		r, err := iptables.New(iptables.Options{IPv6: v6, Logger: log})
		if err != nil {
			continue
		}
		all := netip.MustParsePrefix("0.0.0.0/0")
		if v6 {
			all = netip.MustParsePrefix("::/0")
		}
		for _, s := range []iptables.Set{iptables.Masq(all, all, false), iptables.Forward(all)} {
			if err := r.Purge(s); err != nil {
				log.Warn("removing flannel's iptables rules of an earlier start", "chain", s.Chain, "ipv6", v6, "error", err)
			}
		}
	}
}
