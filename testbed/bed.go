package testbed

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Options shape a testbed.
type Options struct {
	// Name makes the namespace names unique to one test of this process:
	// fu-<pid>-<Name>-h1, ... Keep it short.
	Name string
	// Hosts is how many hosts to create (at least 1).
	Hosts int
	// Direct joins exactly two hosts with one veth pair instead of a
	// bridge in a switch namespace: the shortest underlay, for benchmarks.
	Direct bool
	// MTU of the underlay links; 0 means 1500.
	MTU int
	// Dir holds logs and etcd data; default: a new temporary directory
	// named like the namespaces (OwnPrefix()+Name+"-..."), so that
	// SweepStale finds it when this process is killed before Close.
	Dir string
	// PinHosts binds each host, and every command started in it or in its
	// pods, to one CPU of its own (host i to CPU (i-1) mod NumCPU), so that
	// two hosts on a two-CPU machine behave like two one-CPU machines
	// rather than sharing both CPUs as the scheduler sees fit. Softirq work
	// still runs on the CPU that raises it.
	PinHosts bool
	// IPv6 gives the underlay IPv6 too: host i gets 2001:db8:0:1::<i>/64
	// on eth0 (Addr6) and forwards IPv6 (see ipv6.go).
	IPv6 bool
	// PrivateDirs are directories (say /run/wireguard) that each host has
	// of its own, as separate machines do: host i's is a directory under
	// <Dir>/<host>/private, bound over the path in every command started
	// in the host (NS.Private).
	PrivateDirs []string
}

// Bed is a set of namespace hosts on one underlay, 192.0.2.0/24.
// Close removes everything it created, including processes.
type Bed struct {
	Opts   Options
	Switch *NS // the underlay bridge's namespace; nil when Direct
	Hosts  []*Host
	Dir    string

	mu     sync.Mutex
	procs  []*Proc
	names  []string
	closed bool
}

// Host is one cluster node: a namespace whose eth0 is on the underlay.
type Host struct {
	NS
	Index int        // 1-based
	Addr  netip.Addr // 192.0.2.<Index>
	Addr6 netip.Addr // 2001:db8:0:1::<Index> with Options.IPv6, else zero
	Iface string     // "eth0"
	Pods  []*Pod
	// CNI, once UseCNI set it, creates and removes the host's pods through
	// the real CNI chain.
	CNI    *CNIChain
	bed    *Bed
	podSeq int // pods ever created, which names the next one
}

// Pod is a namespace behind a host's cni0 bridge.
type Pod struct {
	NS
	Addr  netip.Addr // the pod's IPv4 address; its IPv6 one for an IPv6-only pod
	Addr6 netip.Addr // the pod's IPv6 address, zero without IPv6
	// Veth is the host end of the pod's eth0.
	Veth  string
	ports []PortMapping // a CNI pod's hostPorts
}

// UnderlayGateway is the switch's own address, the hosts' default route.
var UnderlayGateway = netip.MustParseAddr("192.0.2.254")

// New builds the hosts and the underlay. On error everything already made
// is removed again.
func New(opts Options) (b *Bed, err error) {
	if opts.Hosts < 1 || (opts.Direct && opts.Hosts != 2) {
		return nil, fmt.Errorf("testbed: %d hosts (Direct needs exactly 2)", opts.Hosts)
	}
	if opts.MTU == 0 {
		opts.MTU = 1500
	}
	if err := claimName(opts.Name); err != nil {
		return nil, err
	}
	b = &Bed{Opts: opts, Dir: opts.Dir}
	if b.Dir == "" {
		if b.Dir, err = os.MkdirTemp("", OwnPrefix()+opts.Name+"-"); err != nil {
			releaseName(opts.Name)
			return nil, err
		}
	}
	SweepStaleOnce()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("testbed: %v", r)
		}
		if err != nil {
			b.Close()
			b = nil
		}
	}()
	if opts.Direct {
		b.buildDirect()
	} else {
		b.buildSwitched()
	}
	if opts.IPv6 {
		b.buildIPv6()
	}
	return b, nil
}

var sweepOnce sync.Once

// SweepStaleOnce is SweepStale the first time the process calls it; New
// calls it. Once is enough (what a killed process left stays until
// someone sweeps), and a test of the sweep itself (the demo's) needs the
// leftovers it made kept until the run under test sweeps them, whatever
// other tests of the process build meanwhile.
func SweepStaleOnce() { sweepOnce.Do(func() { SweepStale() }) }

func (b *Bed) nsName(role string) string {
	return OwnPrefix() + b.Opts.Name + "-" + role
}

// addNS creates a namespace with lo up that the bed removes on Close.
func (b *Bed) addNS(role string) (NS, error) {
	return addNS(b.track(role))
}

// track records the namespace of role for Close and returns its name.
func (b *Bed) track(role string) string {
	name := b.nsName(role)
	b.mu.Lock()
	b.names = append(b.names, name)
	b.mu.Unlock()
	return name
}

// newNS is addNS for the set-up steps of New, which recovers the panic.
func (b *Bed) newNS(role string) NS {
	ns, err := b.addNS(role)
	if err != nil {
		panic(err)
	}
	return ns
}

func (b *Bed) newHost(i int) *Host {
	h := &Host{NS: b.newNS("h" + strconv.Itoa(i)), Index: i, Iface: "eth0", bed: b,
		Addr: netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})}
	if b.Opts.PinHosts {
		h.CPUs = strconv.Itoa((i - 1) % runtime.NumCPU())
	}
	for _, path := range b.Opts.PrivateDirs {
		src := filepath.Join(b.Dir, h.Name, "private", strings.ReplaceAll(strings.Trim(path, "/"), "/", "-"))
		for _, dir := range []string{src, path} {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				panic(err)
			}
		}
		h.Private = append(h.Private, PrivateDir{Path: path, Source: src})
	}
	h.MustRun("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=1",
		"net.ipv4.conf.default.rp_filter=1")
	b.Hosts = append(b.Hosts, h)
	return h
}

func (b *Bed) buildSwitched() {
	sw := b.newNS("sw")
	b.Switch = &sw
	mtu := strconv.Itoa(b.Opts.MTU)
	sw.MustRun("ip", "link", "add", "br0", "mtu", mtu, "type", "bridge")
	sw.MustRun("ip", "addr", "add", UnderlayGateway.String()+"/24", "dev", "br0")
	sw.MustRun("ip", "link", "set", "br0", "up")
	for i := 1; i <= b.Opts.Hosts; i++ {
		h := b.newHost(i)
		port := "sw-h" + strconv.Itoa(i)
		sw.MustRun("ip", "link", "add", port, "mtu", mtu, "type", "veth", "peer", "name", "eth0", "netns", h.Name)
		sw.MustRun("ip", "link", "set", port, "master", "br0", "up")
		h.upUnderlay(b.Opts.MTU)
		h.MustRun("ip", "route", "add", "default", "via", UnderlayGateway.String())
	}
}

func (b *Bed) buildDirect() {
	h1, h2 := b.newHost(1), b.newHost(2)
	h1.MustRun("ip", "link", "add", "eth0", "mtu", strconv.Itoa(b.Opts.MTU), "type", "veth",
		"peer", "name", "eth0", "netns", h2.Name)
	h1.upUnderlay(b.Opts.MTU)
	h2.upUnderlay(b.Opts.MTU)
	// A default route makes eth0 the "interface of the default route" that
	// flannelu picks when no --iface is given.
	h1.MustRun("ip", "route", "add", "default", "via", h2.Addr.String())
	h2.MustRun("ip", "route", "add", "default", "via", h1.Addr.String())
}

func (h *Host) upUnderlay(mtu int) {
	h.MustRun("ip", "link", "set", "eth0", "mtu", strconv.Itoa(mtu), "up")
	h.MustRun("ip", "addr", "add", h.Addr.String()+"/24", "dev", "eth0")
}

// Close stops every process and removes every namespace the bed created.
// It is safe to call more than once.
func (b *Bed) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	procs, names := b.procs, b.names
	b.mu.Unlock()
	// CNI DEL first, as kubelet tears pods down: it releases the
	// addresses and host-side state that removing namespaces would not.
	// The hosts at once, as separate machines would.
	var dels sync.WaitGroup
	for _, h := range b.Hosts {
		if h.CNI != nil {
			dels.Add(1)
			go func() { defer dels.Done(); h.CNI.delAll() }()
		}
	}
	dels.Wait()
	// All at once: each may take seconds to shut down cleanly, and none
	// waits for another (kube-apiserver, Kill set, is not asked at all).
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if p.Kill {
				p.Signal(syscall.SIGKILL)
			}
			p.Stop() //nolint:errcheck // the bed is going
		}()
	}
	wg.Wait()
	for i := len(names) - 1; i >= 0; i-- {
		deleteNS(names[i])
	}
	if b.Opts.Dir == "" {
		os.RemoveAll(b.Dir) // logs and etcd data of a directory New made
	}
	releaseName(b.Opts.Name)
}

// bedNames are the names of this process's open beds. Tests run in
// parallel, and two beds of one name would share namespaces (fu-<pid>-
// <Name>-h1): New refuses a name in use instead.
var bedNames = struct {
	sync.Mutex
	open map[string]bool
}{open: map[string]bool{}}

func claimName(name string) error {
	bedNames.Lock()
	defer bedNames.Unlock()
	if bedNames.open[name] {
		return fmt.Errorf("testbed: another bed of this process is named %q (tests running at once need names of their own)", name)
	}
	bedNames.open[name] = true
	return nil
}

func releaseName(name string) {
	bedNames.Lock()
	delete(bedNames.open, name)
	bedNames.Unlock()
}

// Proc is a long-running process inside a namespace, its output in Log.
type Proc struct {
	Cmd *exec.Cmd
	Log string
	// Kill makes the bed's Close end the process with SIGKILL rather than
	// SIGTERM: for a rig such as kube-apiserver, whose graceful drain
	// (20 s measured under load) tests nothing.
	Kill bool
	done chan struct{}
	err  error
}

// Start runs a command in the host's namespace in the background, its
// output going to <bed dir>/<name>.log. The bed stops it on Close.
func (b *Bed) Start(ns NS, name string, args ...string) (*Proc, error) {
	logPath := filepath.Join(b.Dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := ns.Command(context.Background(), args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	p := &Proc{Cmd: cmd, Log: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); f.Close(); close(p.done) }()
	b.mu.Lock()
	b.procs = append(b.procs, p)
	b.mu.Unlock()
	return p, nil
}

// Signal sends sig to the process group (ip netns exec and its child).
func (p *Proc) Signal(sig syscall.Signal) {
	if p.Cmd.Process != nil {
		syscall.Kill(-p.Cmd.Process.Pid, sig) //nolint:errcheck // the group may be gone
	}
}

// Stop ends the process: SIGTERM, then SIGKILL after 15 s (a clean
// shutdown on a loaded machine may take seconds; the kill is for a
// process that ignores SIGTERM, and Stop's error then says "killed").
func (p *Proc) Stop() error {
	p.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.Signal(syscall.SIGKILL)
		<-p.done
	}
	return p.err
}

// Wait blocks until the process exits or the timeout passes.
func (p *Proc) Wait(timeout time.Duration) (exited bool, err error) {
	select {
	case <-p.done:
		return true, p.err
	case <-time.After(timeout):
		return false, nil
	}
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// WaitTCP waits until something accepts TCP connections at addr inside ns.
func WaitTCP(ns NS, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		c, err := ns.Dial(ctx, addr)
		cancel()
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on %s in %s after %v: %w", addr, ns.Name, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ListenAddr formats an address and port for a listener or URL.
func ListenAddr(a netip.Addr, port int) string {
	return net.JoinHostPort(a.String(), strconv.Itoa(port))
}
