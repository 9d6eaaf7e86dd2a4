package iptables

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// Run ensures every kept set now and then every Resync until ctx ends.
// A failure is logged and counted, never fatal: like flanneld, forwarding
// does not depend on these rules. The rules stay in place when Run
// returns, so a restart keeps traffic flowing.
func (r *Runner) Run(ctx context.Context) {
	t := time.NewTicker(r.opts.Resync)
	defer t.Stop()
	for {
		for _, s := range r.sets {
			if err := r.Ensure(s); err != nil {
				r.failures.Add(1)
				r.opts.Logger.Error("iptables rules not in place", "set", s.Name, "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Ensure leaves s alone when all of its rules exist; otherwise it tears the
// whole set down and sets it up again, so that order is restored too.
func (r *Runner) Ensure(s Set) error {
	if err := r.sameFamily(s); err != nil {
		return err
	}
	missing, err := r.firstMissing(s)
	if err != nil || missing == nil {
		return err
	}
	r.opts.Logger.Info("iptables rules incomplete, setting the set up again in order", "set", s.Name, "missing", missing.String())
	if err := r.Remove(s); err != nil {
		return err
	}
	return r.setup(s)
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
