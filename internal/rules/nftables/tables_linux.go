package nftables

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"sigs.k8s.io/knftables"
)

// kubeProxyMark is kube-proxy's masquerade mark, written as flanneld
// writes it (nft prints 0x00004000).
const kubeProxyMark = "0x4000"

// Tables programs both of flannel's tables.
type Tables struct {
	log  *slog.Logger
	fams [2]*table
}

// table is one family's table and the rules it holds.
type table struct {
	nft    knftables.Interface
	name   string
	family knftables.Family // ip or ip6
	fam    Family
	chains []chain
	// handles are the rule handles of each chain after the last setup:
	// a rule deleted, added or replaced since changes them.
	handles map[string][]int
}

// chain is one of flannel's base chains and its rules.
type chain struct {
	knftables.Chain
	rules []string
}

// New opens both tables' families. It fails when nft is missing or
// unusable, as flanneld's nftables mode does.
func New(o Options) (*Tables, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	t := &Tables{log: o.Logger}
	for i, f := range []struct {
		family knftables.Family
		name   string
		fam    Family
	}{{knftables.IPv4Family, TableIPv4, o.IPv4}, {knftables.IPv6Family, TableIPv6, o.IPv6}} {
		nft, err := knftables.New(f.family, f.name)
		if err != nil {
			return nil, fmt.Errorf("nftables: %w", err)
		}
		t.fams[i] = &table{nft: nft, name: f.name, family: f.family, fam: f.fam}
	}
	// flanneld checks fully-random once, on the IPv4 table, for both.
	random := o.RandomFully && t.fams[0].hasFullyRandom()
	if o.RandomFully && !random {
		o.Logger.Warn("nftables has no masquerade fully-random here: masquerading without it")
	}
	for _, tb := range t.fams {
		tb.chains = chains(tb.family, tb.fam, o.Masq, o.Forward, random)
	}
	return t, nil
}

// chains are flanneld's chains of one family, in its order (nft lists
// them so): postrtg (its masquerade set-up comes first), then forward.
func chains(family knftables.Family, f Family, masq, forward, random bool) []chain {
	if !f.Network.IsValid() {
		return nil
	}
	ip := string(family) // "ip" or "ip6": also the address match keyword
	n := f.Network.Masked().String()
	var out []chain
	if masq {
		s := f.Subnet.Masked().String()
		mcast := "224.0.0.0/4"
		if family == knftables.IPv6Family {
			mcast = "ff00::/8"
		}
		masquerade := "masquerade"
		if random {
			masquerade = "masquerade fully-random"
		}
		out = append(out, chain{
			Chain: knftables.Chain{
				Name:     PostrtgChain,
				Comment:  knftables.PtrTo("chain to manage traffic masquerading by flannel"),
				Type:     knftables.PtrTo(knftables.NATType),
				Hook:     knftables.PtrTo(knftables.PostroutingHook),
				Priority: knftables.PtrTo(knftables.SNATPriority),
			},
			rules: []string{
				// kube-proxy masquerades what it marked itself.
				knftables.Concat("meta mark", kubeProxyMark, "return"),
				// Pod to pod keeps its addresses.
				knftables.Concat(ip, "saddr", s, ip, "daddr", n, "return"),
				knftables.Concat(ip, "saddr", n, ip, "daddr", s, "return"),
				// Outside traffic to this host's pods keeps its source.
				knftables.Concat(ip, "saddr", "!=", s, ip, "daddr", n, "return"),
				// Pods reaching outside the overlay, except multicast.
				knftables.Concat(ip, "saddr", n, ip, "daddr", "!=", mcast, masquerade),
				// Host traffic into the overlay.
				knftables.Concat(ip, "saddr", "!=", n, ip, "daddr", n, masquerade),
			},
		})
	}
	if forward {
		out = append(out, chain{
			Chain: knftables.Chain{
				Name:     ForwardChain,
				Comment:  knftables.PtrTo("chain to accept flannel traffic"),
				Type:     knftables.PtrTo(knftables.FilterType),
				Hook:     knftables.PtrTo(knftables.ForwardHook),
				Priority: knftables.PtrTo(knftables.FilterPriority),
			},
			rules: []string{
				knftables.Concat(ip, "saddr", n, "accept"),
				knftables.Concat(ip, "daddr", n, "accept"),
			},
		})
	}
	return out
}

// hasFullyRandom asks nftables, as flanneld does, whether it takes a
// masquerade fully-random rule (a check: nothing is created).
func (tb *table) hasFullyRandom() bool {
	const test = "masqueradeTest"
	tx := tb.nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Add(&knftables.Chain{Name: test, Type: knftables.PtrTo(knftables.NATType),
		Hook: knftables.PtrTo(knftables.PostroutingHook), Priority: knftables.PtrTo(knftables.SNATPriority)})
	tx.Add(&knftables.Rule{Chain: test, Rule: "ip saddr != 127.0.0.1 masquerade fully-random"})
	return tb.nft.Check(context.Background(), tx) == nil
}

// Setup writes both tables now: each in one transaction, its chains
// emptied and filled, so the rules change without a gap.
func (t *Tables) Setup(ctx context.Context) error { return t.sync(ctx, true) }

// Check sets a table up again when one of its chains (or the table) is
// gone or its rules changed since the last setup; nil when every rule is
// in place after it.
func (t *Tables) Check(ctx context.Context) error { return t.sync(ctx, false) }

// sync sets up every table (all), or those that are not intact.
func (t *Tables) sync(ctx context.Context, all bool) error {
	var errs []error
	for _, tb := range t.fams {
		if !all {
			if tb.handles != nil && tb.intact(ctx) {
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err() // stopping: the listing failed for that
			}
			t.log.Info("nftables rules missing or changed, setting the table up again", "table", tb.name)
		}
		if err := tb.setup(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (tb *table) setup(ctx context.Context) error {
	stale, err := tb.staleChains(ctx)
	if err != nil {
		return err
	}
	tx := tb.nft.NewTransaction()
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("rules for " + tb.name)})
	for _, name := range stale {
		tx.Delete(&knftables.Chain{Name: name})
	}
	for _, c := range tb.chains {
		tx.Add(&c.Chain)
		tx.Flush(&knftables.Chain{Name: c.Name})
		for _, r := range c.rules {
			tx.Add(&knftables.Rule{Chain: c.Name, Rule: r})
		}
	}
	if err := tb.nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("nftables: table %s %s: %w", tb.family, tb.name, err)
	}
	handles, err := tb.listHandles(ctx)
	if err != nil {
		return err
	}
	tb.handles = handles
	return nil
}

// staleChains are flannel's chains in the table that this start does not
// keep (an earlier one ran with --ip-masq, or with the family on), for
// setup to delete: flanneld leaves them.
func (tb *table) staleChains(ctx context.Context) ([]string, error) {
	existing, err := tb.nft.List(ctx, "chains")
	if knftables.IsNotFound(err) {
		return nil, nil // no table yet
	}
	if err != nil {
		return nil, fmt.Errorf("nftables: list chains of %s %s: %w", tb.family, tb.name, err)
	}
	var stale []string
	for _, name := range []string{ForwardChain, PostrtgChain} {
		kept := slices.ContainsFunc(tb.chains, func(c chain) bool { return c.Name == name })
		if !kept && slices.Contains(existing, name) {
			stale = append(stale, name)
		}
	}
	return stale, nil
}

// listHandles lists the rule handles of each of the table's chains.
func (tb *table) listHandles(ctx context.Context) (map[string][]int, error) {
	out := map[string][]int{}
	for _, c := range tb.chains {
		rules, err := tb.nft.ListRules(ctx, c.Name)
		if err != nil {
			return nil, fmt.Errorf("nftables: list chain %s %s %s: %w", tb.family, tb.name, c.Name, err)
		}
		for _, r := range rules {
			if r.Handle != nil {
				out[c.Name] = append(out[c.Name], *r.Handle)
			}
		}
	}
	return out, nil
}

// intact reports whether every chain still holds the rules of the last
// setup, and nothing more.
func (tb *table) intact(ctx context.Context) bool {
	now, err := tb.listHandles(ctx)
	if err != nil {
		return false
	}
	for _, c := range tb.chains {
		if !slices.Equal(now[c.Name], tb.handles[c.Name]) {
			return false
		}
	}
	return true
}

// Delete removes both of flannel's tables (what an nftables-mode start
// left, when this one uses iptables). Absent tables and a host without
// nft are not errors: there is nothing to remove.
func Delete(ctx context.Context) error {
	var errs []error
	for _, f := range []struct {
		family knftables.Family
		name   string
	}{{knftables.IPv4Family, TableIPv4}, {knftables.IPv6Family, TableIPv6}} {
		nft, err := knftables.New(f.family, f.name)
		if err != nil {
			return nil // no usable nft: no nftables rules of flannel's either
		}
		tx := nft.NewTransaction()
		tx.Delete(&knftables.Table{})
		if err := nft.Run(ctx, tx); err != nil && !knftables.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("nftables: delete table %s %s: %w", f.family, f.name, err))
		}
	}
	return errors.Join(errs...)
}
