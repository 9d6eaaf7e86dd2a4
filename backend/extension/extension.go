// Package extension is flannel's extension backend: shell commands from
// the network config do the work of a data path. PreStartupCommand runs
// before the lease is taken and its output is published as the lease's
// BackendData (a JSON string); PostStartupCommand runs once the lease is
// held; SubnetAddCommand and SubnetRemoveCommand run for each peer lease
// of the extension type that appears, changes or goes, with the peer's
// BackendData (its PreStartupCommand's output) on standard input.
//
// Every command runs as `sh -c COMMAND` (flannel's documented behaviour and
// flanneld v0.20.2's; flanneld v0.28 splits the command on spaces and runs
// it without a shell, which breaks the quoting of its own documentation's
// examples), with flanneld's variables added to the daemon's environment.
// Peer commands run one at a time in event order, off the lease watcher;
// one that fails is logged with its exit status and output and counted, and
// the daemon goes on. A start-up command that fails stops the start, as in
// flanneld: there would be no BackendData to publish, or a host set up
// half-way.
package extension

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/internal/metrics"
	"github.com/flannelu/flannelu/subnet"
)

// BackendType is the lease's and the network config's Backend.Type.
const BackendType = "extension"

// Config is the network config's Backend object.
type Config struct {
	PreStartupCommand   string
	PostStartupCommand  string
	SubnetAddCommand    string
	SubnetRemoveCommand string
}

// Options configure New.
type Options struct {
	Network     netip.Prefix // NETWORK of the post-start command; zero for an IPv6-only network
	BackendJSON []byte       // the config's Backend object
	Logger      *slog.Logger
	// Metrics receives flannelu_extension_command_failures_total; nil
	// exports it nowhere.
	Metrics *metrics.Registry
}

// Backend runs the configured commands. Create it with New.
type Backend struct {
	ext      *backend.ExternalInterface
	cfg      Config
	network  netip.Prefix
	log      *slog.Logger
	failures *metrics.Counter

	mu      sync.Mutex
	pending []job
	wake    chan struct{} // a job was queued
}

var _ backend.Backend = (*Backend)(nil)

// job is one peer command to run.
type job struct {
	name, command string
	env           []string
	stdin         string
	subnet        netip.Prefix
}

// New parses the Backend object.
func New(ext *backend.ExternalInterface, opts Options) (*Backend, error) {
	var cfg Config
	if len(opts.BackendJSON) > 0 {
		if err := json.Unmarshal(opts.BackendJSON, &cfg); err != nil {
			return nil, fmt.Errorf("extension backend config %s: %w", opts.BackendJSON, err)
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Backend{ext: ext, cfg: cfg, network: opts.Network, log: log.With("backend", BackendType),
		failures: opts.Metrics.Counter("flannelu_extension_command_failures_total",
			"Extension backend commands (SubnetAddCommand, SubnetRemoveCommand) that failed: a non-zero exit status, or could not be started."),
		wake: make(chan struct{}, 1)}, nil
}

// Init runs PreStartupCommand and returns the lease attributes: its
// output, trimmed, as a JSON string in BackendData (none without the
// command), and each family's public address.
func (b *Backend) Init(ctx context.Context) (subnet.LeaseAttrs, error) {
	attrs := subnet.LeaseAttrs{BackendType: BackendType, PublicIP: b.ext.ExtAddr, PublicIPv6: b.ext.ExtV6Addr}
	if b.cfg.PreStartupCommand == "" {
		b.log.Info("no PreStartupCommand configured")
		return attrs, nil
	}
	out, err := b.run(ctx, "PreStartupCommand", b.cfg.PreStartupCommand, nil, "")
	if err != nil {
		return attrs, err
	}
	data, err := json.Marshal(out)
	if err != nil {
		return attrs, err
	}
	attrs.BackendData = data
	return attrs, nil
}

// MTU is the external interface's, as flanneld's extension backend says:
// what the commands build is theirs to account for.
func (b *Backend) MTU() int { return b.ext.Iface.MTU }

// Start runs PostStartupCommand with this host's lease in NETWORK,
// SUBNET, IPV6SUBNET, PUBLIC_IP and PUBLIC_IPV6.
func (b *Backend) Start(ctx context.Context, own subnet.Lease) error {
	if b.cfg.PostStartupCommand == "" {
		b.log.Info("no PostStartupCommand configured")
		return nil
	}
	env := append([]string{"NETWORK=" + prefixString(b.network)}, leaseEnv(own)...)
	_, err := b.run(ctx, "PostStartupCommand", b.cfg.PostStartupCommand, env, "")
	return err
}

// HandleEvents queues SubnetAddCommand for each added or changed peer
// lease of the extension type (flanneld reports a changed lease as added)
// and SubnetRemoveCommand for each removed one. Leases of other types are
// logged and skipped, as flanneld does.
func (b *Backend) HandleEvents(_ context.Context, events []subnet.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ev := range events {
		l := ev.Lease
		if l.Attrs.BackendType != BackendType {
			b.log.Warn("ignoring a peer lease of another backend type", "subnet", l.Subnet, "type", l.Attrs.BackendType)
			continue
		}
		name, command := "SubnetAddCommand", b.cfg.SubnetAddCommand
		if ev.Type == subnet.EventRemoved {
			name, command = "SubnetRemoveCommand", b.cfg.SubnetRemoveCommand
		}
		b.log.Info("peer "+ev.Type.String(), "subnet", l.Subnet, "ipv6_subnet", l.IPv6Subnet, "public_ip", l.Attrs.PublicIP)
		if command == "" {
			continue
		}
		stdin, err := peerData(l.Attrs.BackendData)
		if err != nil {
			b.failures.Add(1)
			b.log.Error("not running "+name+": the peer's BackendData is not a JSON string", "subnet", l.Subnet, "error", err)
			continue
		}
		b.pending = append(b.pending, job{name: name, command: command, env: leaseEnv(l), stdin: stdin, subnet: l.Subnet})
	}
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// Run runs the queued peer commands in order until ctx is done; a command
// still running then is killed.
func (b *Backend) Run(ctx context.Context) error {
	for {
		b.mu.Lock()
		jobs := b.pending
		b.pending = nil
		b.mu.Unlock()
		for _, j := range jobs {
			if ctx.Err() != nil {
				return nil
			}
			if _, err := b.run(ctx, j.name, j.command, j.env, j.stdin); err != nil && ctx.Err() == nil {
				b.failures.Add(1)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-b.wake:
		}
	}
}

// Failures is the number of peer commands that failed.
func (b *Backend) Failures() uint64 { return b.failures.Value() }

// outputWait bounds how long a command's output is waited for once it
// exited: a background process it started may hold the pipe open.
const outputWait = 5 * time.Second

// run runs `sh -c command` with env added to the daemon's environment and
// stdin followed by a newline on its standard input, as flanneld does, and
// returns its standard output and error together, trimmed (flanneld
// publishes both). A failure is logged with the exit status and output
// and returned.
func (b *Backend) run(ctx context.Context, name, command string, env []string, stdin string) (string, error) {
	cmd := exec.CommandContext(ctx, "sh", "-c", command)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin + "\n")
	cmd.WaitDelay = outputWait
	raw, err := cmd.CombinedOutput()
	out := strings.TrimSpace(string(raw))
	attrs := []any{"command", name, "output", out}
	for _, e := range env {
		if k, v, _ := strings.Cut(e, "="); k == "SUBNET" {
			attrs = append(attrs, "subnet", v)
		}
	}
	if err == nil {
		b.log.Info("ran "+name, attrs...)
		return out, nil
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		attrs = append(attrs, "exit_status", exit.ExitCode())
	}
	b.log.Error(name+" failed", append(attrs, "error", err)...)
	return out, fmt.Errorf("extension backend: %s %q: %w (output: %q)", name, command, err, out)
}

// leaseEnv is flanneld's variables for a lease: its subnets and public
// addresses, empty when the lease has none of a family.
func leaseEnv(l subnet.Lease) []string {
	return []string{
		"SUBNET=" + prefixString(l.Subnet),
		"IPV6SUBNET=" + prefixString(l.IPv6Subnet),
		"PUBLIC_IP=" + addrString(l.Attrs.PublicIP),
		"PUBLIC_IPV6=" + addrString(l.Attrs.PublicIPv6),
	}
}

// peerData is a peer's BackendData as its PreStartupCommand printed it:
// the JSON string decoded; nothing when it published none.
func peerData(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	err := json.Unmarshal(raw, &s)
	return s, err
}

func prefixString(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}

func addrString(a netip.Addr) string {
	if !a.IsValid() || a.IsUnspecified() {
		return ""
	}
	return a.String()
}
