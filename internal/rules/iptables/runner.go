package iptables

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	goipt "github.com/coreos/go-iptables/iptables"

	"github.com/flannelu/flannelu/internal/metrics"
)

// Options shape a Runner.
type Options struct {
	// Resync is how often the kept sets are checked (flanneld's
	// --iptables-resync); default 5s.
	Resync time.Duration
	Logger *slog.Logger
	// Path is the iptables binary; default: iptables (ip6tables with IPv6)
	// on $PATH. Tests point it at a stand-in that fails.
	Path string
	// Metrics receives flannelu_iptables_resync_failures_total
	// (Failures); nil exports it nowhere.
	Metrics *metrics.Registry
	// IPv6 makes the Runner program ip6tables, for the sets of an IPv6
	// network.
	IPv6 bool
}

// Runner programs rule sets with the iptables binary, or ip6tables. It runs
// it from the calling goroutine and starts none of its own, so a caller
// whose OS thread is locked into a network namespace programs that
// namespace.
type Runner struct {
	ipt  *goipt.IPTables
	opts Options
	mu   sync.Mutex // held while the sets are read, changed or programmed
	sets []Set
	// placed names the sets whose jumps were put where they go since
	// they were kept: a start places them, a resync only restores them.
	placed   map[string]bool
	failures *metrics.Counter
}

// lockWait bounds how long one iptables command waits for the xtables lock
// (another program holding it must not stall the resync loop forever).
const lockWait = 5 // seconds

// New finds the iptables (or ip6tables) binary and its version. It fails
// when there is none usable.
func New(o Options) (*Runner, error) {
	if o.Resync <= 0 {
		o.Resync = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	proto, name := goipt.ProtocolIPv4, "iptables"
	if o.IPv6 {
		proto, name = goipt.ProtocolIPv6, "ip6tables"
	}
	// An empty Path makes go-iptables look for the binary on $PATH.
	ipt, err := goipt.New(goipt.IPFamily(proto), goipt.Timeout(lockWait), goipt.Path(o.Path))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	// One count for both tools: the ip6tables runner of a registry adds to
	// the iptables one's.
	failures := o.Metrics.Counter("flannelu_iptables_resync_failures_total",
		"Checks of the iptables and ip6tables rules flannelu keeps (--ip-masq, --iptables-forward-rules) that failed: a command failed or the tool is gone.")
	return &Runner{ipt: ipt, opts: o, placed: map[string]bool{}, failures: failures}, nil
}

// IPv6 reports whether the Runner programs ip6tables.
func (r *Runner) IPv6() bool { return r.opts.IPv6 }

// RandomFully reports whether this iptables (or ip6tables) knows MASQUERADE
// --random-fully.
func (r *Runner) RandomFully() bool { return r.ipt.HasRandomFully() }

// Failures is how many checks of a set failed since New (an iptables
// command that failed, or iptables gone), with those of the other tool's
// Runner when both count into one registry.
func (r *Runner) Failures() uint64 { return r.failures.Value() }

// Keep adds a set for Run to keep in place. Call it before Run.
func (r *Runner) Keep(s Set) { r.sets = append(r.sets, s) }

// sameFamily refuses a set of the other family: ip6tables would reject
// every rule of an IPv4 set, and iptables those of an IPv6 one.
func (r *Runner) sameFamily(s Set) error {
	if s.IPv6 != r.opts.IPv6 {
		return fmt.Errorf("iptables: set %q (IPv6 %t) given to a runner for IPv6 %t", s.Name, s.IPv6, r.opts.IPv6)
	}
	return nil
}

// Update replaces the kept set of s's Name (adds s when there is none) and
// brings the tables in line at once, rule by rule, so that the rest of the
// set keeps working meanwhile (see fill). Safe to call while Run runs. A
// failure is counted and returned; Run's next resync tries again.
func (r *Runner) Update(s Set) error {
	if err := r.sameFamily(s); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	i := slices.IndexFunc(r.sets, func(k Set) bool { return k.Name == s.Name })
	if i < 0 {
		r.sets = append(r.sets, s)
	} else {
		if !slices.EqualFunc(r.sets[i].jumps(), s.jumps(), func(a, b Rule) bool { return a.String() == b.String() }) {
			delete(r.placed, s.Name) // the new jump takes the old one's place
		}
		r.sets[i] = s
	}
	err := r.keep(s)
	if err != nil {
		r.failures.Add(1)
	}
	return err
}

// Purge deletes every jump to s's chain from the chains s jumps from, and
// the chain itself: what an earlier start left when s is no longer wanted
// (or its port changed). Nothing there is not an error.
func (r *Runner) Purge(s Set) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, j := range s.jumps() {
		at, _, err := r.jumpsTo(s, j.Chain)
		if err != nil {
			return err
		}
		// Delete from the end so the numbers of the rest stay valid.
		for i := len(at) - 1; i >= 0; i-- {
			if err := r.ipt.DeleteById(s.Table, j.Chain, at[i]); err != nil {
				return fmt.Errorf("delete jump %d to %s from %s: %w", at[i], s.Chain, j.Chain, err)
			}
		}
	}
	if err := r.ipt.ClearAndDeleteChain(s.Table, s.Chain); err != nil && !isNotExist(err) {
		return fmt.Errorf("delete chain %s in table %s: %w", s.Chain, s.Table, err)
	}
	return nil
}

// Run ensures every kept set now and then every Resync until ctx ends
// (Sync). A failure is logged and counted, never fatal: like flanneld,
// forwarding does not depend on these rules. The rules stay in place when
// Run returns, so a restart keeps traffic flowing.
func (r *Runner) Run(ctx context.Context) {
	t := time.NewTicker(r.opts.Resync)
	defer t.Stop()
	for {
		r.Sync() //nolint:errcheck // logged and counted
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sync ensures every kept set once; each failure is logged, counted and
// returned.
func (r *Runner) Sync() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for _, s := range r.sets {
		if err := r.keep(s); err != nil {
			r.failures.Add(1)
			r.opts.Logger.Error("iptables rules not in place", "set", s.Name, "error", err)
			errs = append(errs, fmt.Errorf("%s rules: %w", s.Name, err))
		}
	}
	return errors.Join(errs...)
}

// keep ensures s, placing its jumps the first time it does so for s's
// name, as flanneld does at each start.
func (r *Runner) keep(s Set) error {
	err := r.ensure(s, !r.placed[s.Name])
	if err == nil {
		r.placed[s.Name] = true
	}
	return err
}

// ensure brings s in place: s's chain holds exactly s's rules in order,
// and each jump to it exists. With place, each jump is also the only jump
// to the chain and sits where it goes (first with Insert, else last), as
// flanneld puts it at a start; a resync leaves a jump where it is, so
// rules others append later stay after it.
func (r *Runner) ensure(s Set, place bool) error {
	if err := r.sameFamily(s); err != nil {
		return err
	}
	// The chain first: a jump added below never leads to a half-filled
	// chain.
	if err := r.fill(s); err != nil {
		return err
	}
	for _, j := range s.jumps() {
		var err error
		if place {
			err = r.place(s, j)
		} else {
			err = r.restore(s, j)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// fill makes s's chain (created when missing) hold exactly s's rules in
// order. Rules of an earlier set (flanneld v0.20.2's, another subnet's, a
// peer gone) or others' go without a moment in which a packet gets a
// verdict neither set gives it: behind the rules the chain and s have in
// common, s's next rules are inserted in order, each at its place, and
// then the chain's old remainder, now below all of s, is deleted from its
// last rule up. While s is going in, a packet that matches one of its
// rules already in gets s's verdict and any other gets the old chain's;
// while the remainder goes, a packet that s does not match falls through
// what is left of the old chain to its end, which gives it the old
// chain's verdict or, once its rule is gone, s's (the end of the chain).
// flanneld instead empties the chain and fills it again, and a new flow in
// between is not masqueraded for its lifetime.
func (r *Runner) fill(s Set) error {
	have, err := r.chain(s.Table, s.Chain)
	if err != nil {
		return err
	}
	want := s.chainRules()
	if slices.Equal(have, want) {
		return nil
	}
	p := 0
	for p < len(have) && p < len(want) && have[p] == want[p] {
		p++
	}
	r.opts.Logger.Info("iptables chain differs from its set; replacing the rules that differ, in place", "set", s.Name,
		"chain", s.Chain, "kept", p, "removed", len(have)-p, "added", len(want)-p)
	rules := slices.DeleteFunc(slices.Clone(s.Rules), func(rule Rule) bool { return rule.Chain != s.Chain })
	for i := p; i < len(want); i++ {
		if err := r.ipt.Insert(s.Table, s.Chain, i+1, rules[i].Spec...); err != nil {
			return fmt.Errorf("insert %s at %d in table %s: %w", rules[i], i+1, s.Table, err)
		}
	}
	for i := len(want) + len(have) - p; i > len(want); i-- {
		if err := r.ipt.DeleteById(s.Table, s.Chain, i); err != nil {
			return fmt.Errorf("delete rule %d of %s in table %s: %w", i, s.Chain, s.Table, err)
		}
	}
	// A rule iptables lists otherwise than the set writes it would be
	// rewritten at every resync: say so instead.
	if have, err = r.chain(s.Table, s.Chain); err == nil && !slices.Equal(have, want) {
		err = fmt.Errorf("chain %s in table %s lists as\n%s\nafter writing\n%s", s.Chain, s.Table,
			strings.Join(have, "\n"), strings.Join(want, "\n"))
	}
	return err
}

// chain lists the rules of a chain of flannel's as iptables -S prints them,
// creating the chain when it is missing.
func (r *Runner) chain(table, chain string) ([]string, error) {
	listed, err := r.ipt.List(table, chain)
	if err == nil {
		return listed[1:], nil // line 0 is -N <chain>
	}
	// iptables-nft says "incompatible" of a chain that is not there, so
	// ask plainly before creating it.
	if ok, cerr := r.ipt.ChainExists(table, chain); cerr != nil || ok {
		return nil, fmt.Errorf("list %s in table %s: %w", chain, table, err)
	}
	if err := r.ipt.NewChain(table, chain); err != nil {
		return nil, fmt.Errorf("create chain %s in table %s: %w", chain, table, err)
	}
	return nil, nil
}

// restore adds jump j to s's chain at its place when it is missing.
func (r *Runner) restore(s Set, j Rule) error {
	ok, err := r.ipt.Exists(s.Table, j.Chain, j.Spec...)
	if err != nil && !isNotExist(err) {
		return fmt.Errorf("check %s in table %s: %w", j, s.Table, err)
	}
	if ok {
		return nil
	}
	r.opts.Logger.Info("iptables jump missing, adding it", "set", s.Name, "rule", j.String())
	return r.add(s.Table, j)
}

// place makes jump j the only jump to s's chain from j's chain, first
// there with Insert and last otherwise. A jump elsewhere (flanneld v0.20.2
// inserted it first where v0.28 appends it) is added at its place before
// the old one goes, so that the chain is always jumped to; for that moment
// a packet passes through it twice, and a second pass gives it the first
// pass's verdict.
func (r *Runner) place(s Set, j Rule) error {
	at, last, err := r.jumpsTo(s, j.Chain)
	if err != nil {
		return err
	}
	want := last
	if j.Insert {
		want = 1
	}
	if len(at) == 1 && at[0] == want {
		// The one jump there is ours unless its spec changed (the
		// peer filter's port): Exists tells.
		if ok, err := r.ipt.Exists(s.Table, j.Chain, j.Spec...); err != nil && !isNotExist(err) {
			return fmt.Errorf("check %s in table %s: %w", j, s.Table, err)
		} else if ok {
			return nil
		}
	}
	if len(at) > 0 {
		r.opts.Logger.Info("iptables jump moved to its place", "set", s.Name, "rule", j.String(), "was_at", at)
	}
	if err := r.add(s.Table, j); err != nil {
		return err
	}
	if at, _, err = r.jumpsTo(s, j.Chain); err != nil {
		return err
	}
	// Delete from the end so the numbers of the rest stay valid, all but
	// the one just added.
	for i := len(at) - 1; i >= 0; i-- {
		if (j.Insert && i == 0) || (!j.Insert && i == len(at)-1) {
			continue
		}
		if err := r.ipt.DeleteById(s.Table, j.Chain, at[i]); err != nil {
			return fmt.Errorf("delete jump %d to %s from %s: %w", at[i], s.Chain, j.Chain, err)
		}
	}
	return nil
}

// jumpsTo numbers the rules of the built-in chain from (1-based) that jump
// to s's chain, and gives the number of its last rule.
func (r *Runner) jumpsTo(s Set, from string) (at []int, last int, err error) {
	listed, err := r.ipt.List(s.Table, from)
	if err != nil {
		return nil, 0, fmt.Errorf("list %s in table %s: %w", from, s.Table, err)
	}
	// Line 0 is the chain's policy; line i is rule i.
	for i := 1; i < len(listed); i++ {
		if strings.HasSuffix(listed[i], " -j "+s.Chain) {
			at = append(at, i)
		}
	}
	return at, len(listed) - 1, nil
}

// add puts rule into its chain: first with Insert, else last.
func (r *Runner) add(table string, rule Rule) error {
	var err error
	if rule.Insert {
		err = r.ipt.Insert(table, rule.Chain, 1, rule.Spec...)
	} else {
		err = r.ipt.Append(table, rule.Chain, rule.Spec...)
	}
	if err != nil {
		return fmt.Errorf("add %s in table %s: %w", rule, table, err)
	}
	return nil
}

// isNotExist tells "no such rule or chain" from real failures.
func isNotExist(err error) bool {
	var e *goipt.Error
	return errors.As(err, &e) && e.IsNotExist()
}
