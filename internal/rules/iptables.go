package rules

import (
	"context"
	"errors"
	"fmt"

	"github.com/flannelu/flannelu/internal/rules/iptables"
	"github.com/flannelu/flannelu/internal/rules/nftables"
)

// iptManager keeps flanneld's chains in iptables (IPv4 network) and
// ip6tables (IPv6 network), one Runner each.
type iptManager struct {
	state
	o Options
	// runners are the enabled families' with a usable tool; missing
	// says which tool was not usable.
	runners []*iptables.Runner
	missing error
}

func newIPTables(o Options) *iptManager {
	m := &iptManager{o: o}
	if !o.Masq && !o.Forward {
		return m
	}
	var missing []error
	for _, f := range []struct {
		fam Family
		v6  bool
	}{{o.IPv4, false}, {o.IPv6, true}} {
		if !f.fam.Network.IsValid() {
			continue
		}
		r, err := iptables.New(iptables.Options{Resync: o.Resync, Logger: o.Logger, Metrics: o.Metrics, IPv6: f.v6})
		if err != nil {
			// Like flanneld: logged, and the node forwards anyway.
			o.Logger.Error("iptables rules not set up", "error", err)
			missing = append(missing, err)
			continue
		}
		m.keep(r, f.fam)
		m.runners = append(m.runners, r)
	}
	m.missing = errors.Join(missing...)
	return m
}

// keep gives r the family's sets. A previous subnet.env of another
// subnet or network needs no recycle of its own here (flanneld deletes
// that subnet's rules first): the chains are brought to exactly the
// current sets, which replaces the earlier subnet's rules, flanneld
// v0.20.2's and any other, rule by rule.
func (m *iptManager) keep(r *iptables.Runner, f Family) {
	if m.o.Masq {
		if old := f.PrevSubnet.Masked(); old.IsValid() && (old != f.Subnet || f.PrevNetwork != f.Network) {
			m.o.Logger.Info("subnet or network changed since the last start; its masquerade rules are replaced",
				"subnet", f.Subnet, "previous_subnet", old, "network", f.Network, "previous_network", f.PrevNetwork)
		}
		r.Keep(iptables.Masq(f.Network, f.Subnet, m.o.RandomFully && r.RandomFully()))
	}
	if m.o.Forward {
		r.Keep(iptables.Forward(f.Network))
	}
}

func (m *iptManager) Setup(ctx context.Context) error {
	// flanneld v0.28 removes its nftables tables when it runs in iptables
	// mode; so does flannelu.
	if err := nftables.Delete(ctx); err != nil {
		m.o.Logger.Warn("removing flannel's nftables tables of an earlier start", "error", err)
	}
	return m.sync()
}

// sync ensures every runner's sets once and records the outcome.
func (m *iptManager) sync() error {
	errs := []error{m.missing}
	for _, r := range m.runners {
		errs = append(errs, r.Sync())
	}
	err := errors.Join(errs...)
	if err != nil {
		err = fmt.Errorf("iptables: %w", err)
	}
	m.set(err)
	return err
}

func (m *iptManager) Run(ctx context.Context) {
	if len(m.runners) == 0 {
		return
	}
	every(ctx, m.o.Resync, func() { m.sync() }) //nolint:errcheck // recorded, and logged by the runners
}
