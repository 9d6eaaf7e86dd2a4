package iptables

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	goipt "github.com/coreos/go-iptables/iptables"

	"github.com/flannelu/flannelu/metrics"
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
	ipt      *goipt.IPTables
	opts     Options
	mu       sync.Mutex // held while the sets are read, changed or programmed
	sets     []Set
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
	return &Runner{ipt: ipt, opts: o, failures: failures}, nil
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
// set keeps working meanwhile: rules of the old set that s lacks are
// deleted, rules s adds are inserted at their place, then s is ensured as
// Run would. Safe to call while Run runs. A failure is counted and
// returned; Run's next resync tries again.
func (r *Runner) Update(s Set) error {
	if err := r.sameFamily(s); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var old *Set
	for i := range r.sets {
		if r.sets[i].Name == s.Name {
			old = &Set{}
			*old, r.sets[i] = r.sets[i], s
		}
	}
	if old == nil {
		r.sets = append(r.sets, s)
	}
	err := r.step(old, s)
	if err == nil {
		err = r.Ensure(s)
	}
	if err != nil {
		r.failures.Add(1)
	}
	return err
}

// step changes the rules of old into those of s in place. The chain holds
// old's rules in order (Ensure checks that after), so deleting what s
// drops and inserting what s adds at its index gives s's order.
func (r *Runner) step(old *Set, s Set) error {
	if old == nil {
		return nil // nothing in place to change: Ensure sets s up
	}
	want := map[string]bool{}
	for _, rule := range s.Rules {
		want[rule.String()] = true
	}
	had := map[string]bool{}
	for _, rule := range old.Rules {
		had[rule.String()] = true
		if !want[rule.String()] {
			if err := r.ipt.Delete(s.Table, rule.Chain, rule.Spec...); err != nil && !isNotExist(err) {
				return fmt.Errorf("delete %s in table %s: %w", rule, s.Table, err)
			}
		}
	}
	pos := map[string]int{} // 1-based index of the next rule in each chain
	for _, rule := range s.Rules {
		pos[rule.Chain]++
		if had[rule.String()] {
			continue
		}
		at := pos[rule.Chain]
		if rule.Insert {
			at = 1
		}
		if err := r.ipt.Insert(s.Table, rule.Chain, at, rule.Spec...); err != nil {
			return fmt.Errorf("insert %s at %d in table %s: %w", rule, at, s.Table, err)
		}
	}
	return nil
}

// Purge deletes every jump to s's chain from the chains s jumps from, and
// the chain itself: what an earlier start left when s is no longer wanted
// (or its port changed). Nothing there is not an error.
func (r *Runner) Purge(s Set) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	from := map[string]bool{}
	for _, rule := range s.Rules {
		if rule.Chain != s.Chain {
			from[rule.Chain] = true
		}
	}
	for chain := range from {
		listed, err := r.ipt.List(s.Table, chain)
		if err != nil {
			return fmt.Errorf("list %s in table %s: %w", chain, s.Table, err)
		}
		// Line 0 is the chain's policy; line i is rule i. Delete from
		// the end so the numbers of the rest stay valid.
		for i := len(listed) - 1; i >= 1; i-- {
			if strings.HasSuffix(listed[i], " -j "+s.Chain) {
				if err := r.ipt.DeleteById(s.Table, chain, i); err != nil {
					return fmt.Errorf("delete jump %d to %s from %s: %w", i, s.Chain, chain, err)
				}
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
		if err := r.Ensure(s); err != nil {
			r.failures.Add(1)
			r.opts.Logger.Error("iptables rules not in place", "set", s.Name, "error", err)
			errs = append(errs, fmt.Errorf("%s rules: %w", s.Name, err))
		}
	}
	return errors.Join(errs...)
}

// Ensure leaves s alone when all of its rules exist; otherwise it tears the
// whole set down and sets it up again, so that order is restored too.
func (r *Runner) Ensure(s Set) error {
	if err := r.sameFamily(s); err != nil {
		return err
	}
	missing, err := r.firstMissing(s)
	if err != nil {
		return err
	}
	if missing != nil {
		r.opts.Logger.Info("iptables rules incomplete, setting the set up again in order", "set", s.Name, "missing", missing.String())
	} else if extra, err := r.extraRules(s); err != nil || extra == 0 {
		return err
	} else {
		r.opts.Logger.Info("iptables chain holds rules not in the set, setting the set up again", "set", s.Name, "chain", s.Chain, "extra", extra)
	}
	if err := r.Remove(s); err != nil {
		return err
	}
	return r.setup(s)
}

// extraRules counts the rules in an Exact set's chain beyond its own; 0
// for a set that is not Exact.
func (r *Runner) extraRules(s Set) (int, error) {
	if !s.Exact {
		return 0, nil
	}
	listed, err := r.ipt.List(s.Table, s.Chain)
	if err != nil {
		return 0, fmt.Errorf("list %s in table %s: %w", s.Chain, s.Table, err)
	}
	n := 0
	for _, rule := range s.Rules {
		if rule.Chain == s.Chain {
			n++
		}
	}
	return len(listed) - 1 - n, nil // line 0 is -N <chain>
}

func (r *Runner) firstMissing(s Set) (*Rule, error) {
	for i, rule := range s.Rules {
		ok, err := r.ipt.Exists(s.Table, rule.Chain, rule.Spec...)
		if err != nil && !isNotExist(err) {
			return nil, fmt.Errorf("check %s in table %s: %w", rule, s.Table, err)
		}
		if !ok {
			return &s.Rules[i], nil
		}
	}
	return nil, nil
}

// Remove deletes every rule of s, every copy of each, and ignores rules
// that are not there. flanneld's recycle uses it for the masquerade rules
// of a subnet this host no longer holds. The chain itself stays.
func (r *Runner) Remove(s Set) error {
	if err := r.sameFamily(s); err != nil {
		return err
	}
	for _, rule := range s.Rules {
		for {
			err := r.ipt.Delete(s.Table, rule.Chain, rule.Spec...)
			if isNotExist(err) {
				break
			}
			if err != nil {
				return fmt.Errorf("delete %s in table %s: %w", rule, s.Table, err)
			}
		}
	}
	return nil
}

// setup creates (or empties) the set's chain, then adds the rules in order.
func (r *Runner) setup(s Set) error {
	if err := r.ipt.ClearChain(s.Table, s.Chain); err != nil {
		return fmt.Errorf("create chain %s in table %s: %w", s.Chain, s.Table, err)
	}
	for _, rule := range s.Rules {
		var err error
		if rule.Insert {
			err = r.ipt.Insert(s.Table, rule.Chain, 1, rule.Spec...)
		} else {
			err = r.ipt.Append(s.Table, rule.Chain, rule.Spec...)
		}
		if err != nil {
			return fmt.Errorf("add %s in table %s: %w", rule, s.Table, err)
		}
	}
	return nil
}

// isNotExist tells "no such rule or chain" from real failures.
func isNotExist(err error) bool {
	var e *goipt.Error
	return errors.As(err, &e) && e.IsNotExist()
}
