//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/flannelu/flannelu/testbed"
)

// pathResult is everything measured on one data path.
type pathResult struct {
	Path    string       `json:"path"`
	IPv6    *ipv6Result  `json:"ipv6,omitempty"` // paths in ipv6Paths
	Error   string       `json:"error,omitempty"`
	TCP1    *iperfResult `json:"tcp_1_stream,omitempty"`
	TCP4    *iperfResult `json:"tcp_4_streams,omitempty"`
	UDP     []udpResult  `json:"udp_64b,omitempty"`
	Latency *latResult   `json:"latency,omitempty"`
	// Forwarders is what the userspace forwarders did per round trip
	// (-perf; none on the kernel paths).
	Forwarders *forwarderStats `json:"forwarders_per_round_trip,omitempty"`
}

// closer is a testbed to tear down: a *testbed.Cluster (etcd, flannelu)
// or, for the hand-made paths, a bare *testbed.Bed.
type closer interface{ Close() }

// active is the testbed being measured, for the signal handler.
var active struct {
	sync.Mutex
	tb          closer
	interrupted bool
}

// run measures every path in turn, each on a fresh testbed that is torn
// down before the next, and writes the report files. With -rounds N it
// does so N times, each round starting one path later in the list, so
// that load on the machine that comes and goes spreads over all paths.
func run(cfg *config) (*report, error) {
	dir, err := os.MkdirTemp("", "flannelu-bench-")
	if err != nil {
		return nil, err
	}
	stop := onSignal(cfg, dir)
	defer stop()
	rep := newReport(cfg)
	var failed []string
	for r := range cfg.rounds {
		load := loadAvg()
		round := measureRound(cfg, dir, r, &failed)
		if r == 0 {
			rep.Paths = round
		}
		if cfg.rounds > 1 {
			rep.Rounds = append(rep.Rounds, roundResult{LoadAvg: load, Paths: round})
		}
	}
	if err := writeOutputs(cfg, rep); err != nil {
		return rep, err
	}
	if len(failed) > 0 {
		return rep, fmt.Errorf("logs kept in %s; %s", dir, strings.Join(failed, "; "))
	}
	os.RemoveAll(dir)
	return rep, nil
}

// measureRound measures every path once, starting with the r-th, and
// returns the results in the order of -paths; failures are added to
// failed.
func measureRound(cfg *config, dir string, r int, failed *[]string) []pathResult {
	round := make([]pathResult, len(cfg.paths))
	for k := range cfg.paths {
		i := (k + r) % len(cfg.paths)
		p := cfg.paths[i]
		fmt.Fprintf(os.Stderr, "bench: %s ...\n", p)
		round[i] = measurePath(cfg, p, filepath.Join(dir, fmt.Sprintf("%s-%d", p, r+1)))
		if e := round[i].Error; e != "" {
			*failed = append(*failed, p+": "+e)
			fmt.Fprintf(os.Stderr, "bench: %s failed: %s\n", p, e)
		}
	}
	return round
}

// measurePath builds the testbed for one path, measures, and always tears
// it down again.
func measurePath(cfg *config, path, dir string) (res pathResult) {
	res.Path = path
	defer func() {
		if r := recover(); r != nil {
			res.Error = fmt.Sprint(r)
		}
	}()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		res.Error = err.Error()
		return res
	}
	s, err := setupPath(cfg, path, dir)
	if s.tb != nil {
		defer release(s.tb)
	}
	if err == nil {
		err = measure(cfg, s, &res)
	}
	if err == nil {
		err = measureIPv6(cfg, path, dir, &res)
	}
	if err != nil {
		res.Error = err.Error()
		for _, n := range s.nodes {
			res.Error += fmt.Sprintf("\n%s on %s:%s", filepath.Base(n.Args[0]), n.Host.Name, testbed.Tail(n.Proc.Log, 10))
		}
		for _, h := range s.helpers {
			res.Error += fmt.Sprintf("\nforwarder on %s:%s", h.host, testbed.Tail(h.proc.Log, 10))
		}
	}
	return res
}

// measure runs the measurements -measure selects on a built testbed.
func measure(cfg *config, s *setup, res *pathResult) error {
	var err error
	if cfg.measures("tcp") {
		if res.TCP1, res.TCP4, err = measureTCP(cfg, s.bed, s.src, s.dst); err != nil {
			return err
		}
	}
	if cfg.measures("udp") {
		if res.UDP, err = measureUDP(cfg, s.bed, s.src, s.dst); err != nil {
			return err
		}
	}
	if cfg.measures("latency") {
		res.Latency, res.Forwarders, err = measureLatency(cfg, s.bed, s.src, s.dst, s.forwarders(res.Path))
	}
	return err
}

// setup is one path's testbed, built: two pods that reach each other.
// The measurements only see bed and the pods, not who programmed the kernel.
type setup struct {
	bed      *testbed.Bed
	tb       closer                // what to tear down; nil if nothing was built
	nodes    map[int]*testbed.Node // flannelu (flanneld) per host; none on the hand-made paths
	helpers  []hostProc            // the floors' forwarders, for the failure report
	src, dst *testbed.Pod
}

// setupPath builds the path's testbed — with flannelu, with flanneld for
// flanneld-udp, programmed by hand for the -manual paths, or with the
// harness's own forwarder for the floors — and waits until the pods reach
// each other.
func setupPath(cfg *config, path, dir string) (*setup, error) {
	s := &setup{}
	name := cfg.name + "-" + strings.ReplaceAll(path, "-", "")
	var err error
	switch base, manual := manualBase(path); {
	case manual:
		err = setupManual(cfg, s, base, name, dir)
	case isFloor(path):
		err = setupFloor(cfg, s, path, name, dir)
	case path == flanneldPath:
		err = setupFlanneld(cfg, s, name, dir)
	case path == wireguardGoPath:
		err = setupWireGuardGo(cfg, s, name, dir)
	default:
		err = setupFlannelu(cfg, s, path, name, dir)
	}
	if err != nil {
		return s, err
	}
	s.src, s.dst = s.bed.Hosts[0].Pods[0], s.bed.Hosts[1].Pods[0]
	for _, p := range [][2]*testbed.Pod{{s.src, s.dst}, {s.dst, s.src}} {
		if err := testbed.Eventually(20*time.Second, func() error {
			_, err := testbed.Ping(p[0].NS, p[1].Addr.String(), 1)
			return err
		}); err != nil {
			return s, fmt.Errorf("%s never reached %s: %w", p[0].Addr, p[1].Addr, err)
		}
	}
	return s, nil
}

// daemon is what a cluster path runs on each host: its binary, the
// backend its network config names, and the flags host i gets beyond the
// testbed's own (etcd endpoint, subnet file, healthz address).
type daemon struct {
	bin     string
	backend string
	kube    bool // Kubernetes mode: the API server is the store (kubePath)
	args    func(host int) ([]string, error)
}

// setupFlannelu runs flannelu with the path's backend, in Kubernetes mode
// for kubePath.
func setupFlannelu(cfg *config, s *setup, path, name, dir string) error {
	backend, kube := pathBackend(path)
	return setupCluster(cfg, s, daemon{bin: cfg.flannelu, backend: backend, kube: kube, args: func(i int) ([]string, error) {
		args := cfg.args
		if cfg.profile == "" {
			return args, nil
		}
		prof, err := filepath.Abs(filepath.Join(cfg.profile, fmt.Sprintf("%s-h%d.pprof", path, i)))
		return append(args[:len(args):len(args)], "--cpu-profile", prof), err
	}}, name, dir)
}

// setupCluster starts etcd with the daemon's network config (in
// Kubernetes mode also the API server, the config in net-conf.json), then
// the daemon and one pod on each host (startNodes); setupPath then checks
// that each pod reaches the other.
func setupCluster(cfg *config, s *setup, d daemon, name, dir string) error {
	conf := fmt.Sprintf(`{"Network":%q,"SubnetLen":24,"Backend":{"Type":%q}}`, overlayNetwork, d.backend)
	c, err := testbed.NewCluster(testbed.ClusterOptions{
		Bed:      testbed.Options{Name: name, Direct: true, Hosts: 2, Dir: dir, PinHosts: cfg.pin, PrivateDirs: privateDirs(d.backend)},
		Flannelu: d.bin, Config: conf, Kube: d.kube,
	})
	if err != nil {
		return err
	}
	s.bed, s.tb, s.nodes = c.Bed, c, c.Nodes
	if err := hold(c); err != nil {
		return err
	}
	return startNodes(c, d.args)
}

// startNodes starts the cluster's daemon on host 1, then, once host 1
// holds its lease (JoinNode waits for subnet.env; in Kubernetes mode it
// registers the host's Node first), on host 2, each with args(i) and one
// pod: flanneld v0.20.2 can miss for good a peer that joins within about
// a second of another.
func startNodes(c *testbed.Cluster, args func(host int) ([]string, error)) error {
	for i := 1; i <= 2; i++ {
		a, err := args(i)
		if err != nil {
			return err
		}
		n, err := c.JoinNode(i, a...)
		if err != nil {
			return err
		}
		if err := n.AddPods(1); err != nil {
			return err
		}
	}
	return nil
}

// hold registers c with the signal handler; it fails if a signal already
// came, so that a testbed built during the interruption is removed too.
func hold(c closer) error {
	active.Lock()
	defer active.Unlock()
	if active.interrupted {
		return errors.New("interrupted")
	}
	active.tb = c
	return nil
}

func release(c closer) {
	active.Lock()
	active.tb = nil
	active.Unlock()
	c.Close()
}

// onSignal tears the current testbed down on SIGINT/SIGTERM (and sweeps
// this run's namespace names for anything half built), removes the log
// directory and exits. It holds active's lock from the signal to the exit:
// the measurement the teardown breaks fails at once, and its release (or
// run's stop) must wait here rather than let main exit mid-teardown and
// leave namespaces behind.
func onSignal(cfg *config, dir string) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-ch:
			fmt.Fprintf(os.Stderr, "\nbench: %v: tearing down\n", sig)
			active.Lock() // never unlocked: os.Exit below
			active.interrupted = true
			if active.tb != nil {
				active.tb.Close()
			}
			testbed.Sweep(testbed.OwnPrefix())
			os.RemoveAll(dir)
			os.Exit(130)
		case <-done:
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
		active.Lock() // a teardown under way ends in os.Exit: wait for it
		active.Unlock()
	}
}
