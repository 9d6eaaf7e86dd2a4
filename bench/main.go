//go:build linux

// Command bench is flannelu's end-to-end benchmark harness. For each data
// path (flannelu's udp backend; ipip: flannelu's ipip backend, on a kernel
// without ipip its userspace path, the udp pipeline over a raw socket of
// protocol 4; udp-kube: the udp path in Kubernetes mode, a
// real kube-apiserver as the store; flanneld-udp: flanneld v0.20.2's own udp
// backend, the peer flannelu replaces; kernel vxlan and host-gw as
// programmed by flannelu's vxlan and host-gw backends, those two kernel
// paths set up by hand with ip and bridge, no flannelu; and the floors,
// udp-floor, udp-floor-poll and udp-floor-rawpoll: the udp backend's layout
// with the simplest possible userspace forwarder in flannelu's place, two
// blocking threads or one thread in poll() (raw: without the Go
// scheduler), the floor any forwarder woken per packet pays) it
// builds the same namespace testbed — two hosts over one veth, one pod per
// host behind cni0, etcd (and for udp-kube kube-apiserver) on host 1 for
// flannelu and flanneld — measures
// pod-to-pod TCP throughput (iperf3), 64-byte UDP delivery at paced offered
// rates, UDP round-trip latency and whole-machine CPU cost per GB, tears
// the testbed down, and moves on. It prints a table with ratios against
// kernel vxlan, against flanneld's udp backend, and of flannelu's kernel
// paths against the hand-made ones, and can write it into BENCHMARKS.md
// between <!-- bench:begin --> and <!-- bench:end -->. Root only.
//
// The same binary is its own traffic tool: started with FLANNELU_BENCH_HELPER
// set (through ip netns exec) it runs a load generator, receiver, echo
// server or ping client in a pod instead (helper.go), or udp-floor's
// forwarder in a host (floor.go).
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flannelu/flannelu/testbed"
)

// config is one harness run's settings.
type config struct {
	flannelu   string
	flanneld   string // flanneld v0.20.2, for the flanneld-udp path
	paths      []string
	iperfTime  time.Duration
	udpTime    time.Duration
	rates      []int // offered packets per second; 0 = as fast as possible
	roundTrips int
	quick      bool
	write      string // BENCHMARKS.md to update; empty: print only
	jsonOut    string // results.json; empty: none
	name       string // namespace name prefix: fu-<name>-<path>-h1 ...
	self       string // this executable, re-run inside pods as the helper
	command    string // the command line, as recorded in the report
	profile    string // directory for each flannelu's CPU profile; empty: none
	args       []string
	pin        bool     // hosts on CPUs of their own (testbed.Options.PinHosts)
	measure    []string // which of allMeasures to run
	perf       bool     // count the forwarders' system calls and wake-ups per round trip
	rounds     int      // measure every path this many times, interleaved
	cp         *cpFlags // the control-plane harness's flags (cp.go)
}

// allMeasures are the measurements, in the order they run.
var allMeasures = []string{"tcp", "udp", "latency"}

func (c *config) measures(m string) bool { return slices.Contains(c.measure, m) }

func main() {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helperMain(mode, os.Args[1:]))
	}
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: needs root (network namespaces)")
		os.Exit(1)
	}
	if cfg.measures(controlPlane) {
		if err := runControlPlane(cfg); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	rep, err := run(cfg)
	if rep != nil {
		fmt.Print(markdown(rep))
		if len(rep.Rounds) > 0 {
			fmt.Print(roundsMarkdown(rep))
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (*config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	cp := addControlPlaneFlags(fs)
	bin := fs.String("flannelu", "bin/flannelu", "the flannelu binary")
	flanneld := fs.String("flanneld", flanneldBin, "flanneld v0.20.2, for the "+flanneldPath+" path (make flanneld)")
	paths := fs.String("paths", strings.Join(allPaths, ","), "data paths to measure: "+strings.Join(allPaths, ", "))
	iperfTime := fs.Duration("t", 5*time.Second, "length of each iperf3 run")
	udpTime := fs.Duration("udp-time", 3*time.Second, "length of each 64-byte UDP run")
	rates := fs.String("rates", "100000,300000,1000000,0", "offered 64-byte UDP rates in packets/s (0 = max)")
	rts := fs.Int("round-trips", 20000, "UDP ping-pong round trips for the latency percentiles")
	quick := fs.Bool("quick", false, "short runs for a smoke test (1 s iperf3, 0.5 s UDP, 100k and max, 2000 round trips)")
	write := fs.String("write", "", "update the bench section of this markdown file (e.g. BENCHMARKS.md)")
	jsonOut := fs.String("json", "", "write machine-readable results here (default with -write: bench/results.json)")
	name := fs.String("name", "bench", "namespace name prefix (fu-<name>-...)")
	profile := fs.String("profile", "", "write each flannelu's CPU profile into this directory (<path>-h<i>.pprof)")
	pin := fs.Bool("pin", false, "bind each host and its pods to a CPU of its own (taskset), like two one-CPU machines")
	extra := fs.String("flannelu-args", "", "extra flannelu flags for every node, space-separated (e.g. \"--udp-workers 2\")")
	measure := fs.String("measure", strings.Join(allMeasures, ","), "measurements to run: "+strings.Join(allMeasures, ", ")+
		"; or "+controlPlane+" alone (the control-plane harness: -nodes, -stores, -backends, ...)")
	rounds := fs.Int("rounds", 1, "measure the paths this many times, interleaved, and print medians and ranges (not with -write)")
	perf := fs.Bool("perf", false, "count the forwarders' system calls, context switches, CPU migrations and CPU time per round trip (perf stat)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	cfg := &config{paths: splitList(*paths), iperfTime: *iperfTime, udpTime: *udpTime,
		roundTrips: *rts, quick: *quick, write: *write, jsonOut: *jsonOut, name: *name,
		command: "go run ./bench " + strings.Join(args, " "), profile: *profile, args: strings.Fields(*extra), pin: *pin,
		measure: splitList(*measure), perf: *perf, rounds: *rounds, cp: cp}
	if cfg.jsonOut == "" && cfg.write != "" && !cfg.measures(controlPlane) { // its own: cpFlags.config
		cfg.jsonOut = filepath.Join("bench", map[bool]string{false: "results.json", true: "results-pinned.json"}[cfg.pin])
	}
	var err error
	if cfg.rates, err = parseRates(*rates); err != nil {
		return nil, err
	}
	if cfg.quick {
		cfg.iperfTime, cfg.udpTime, cfg.rates, cfg.roundTrips = time.Second, 500*time.Millisecond, []int{100000, 0}, 2000
	}
	if cfg.flannelu, err = filepath.Abs(*bin); err != nil {
		return nil, err
	}
	if cfg.flanneld, err = filepath.Abs(*flanneld); err != nil {
		return nil, err
	}
	if cfg.self, err = os.Executable(); err != nil {
		return nil, err
	}
	if cfg.measures(controlPlane) && len(cfg.measure) > 1 {
		return nil, errors.New("-measure " + controlPlane + " runs alone")
	}
	if cfg.measures(controlPlane) {
		return cfg, nil // runControlPlane checks its own flags
	}
	return cfg, cfg.check()
}

// allPaths are the data paths the harness knows, in the default order:
// flannelu's udp backend, its ipip backend (the same pipeline, IPIP on the
// wire), the udp backend in Kubernetes mode, next to
// flanneld's, flannelu's kernel backends,
// the kernel paths programmed by hand, then the floors of a userspace
// forwarder (cheap: a few seconds more per run).
var allPaths = []string{"udp", "ipip", kubePath, flanneldPath, "vxlan", "host-gw", "vxlan" + manualSuffix, "host-gw" + manualSuffix,
	floorPath, floorPollPath, floorRawPath, wireguardPath, wireguardGoPath}

func (c *config) check() error {
	for _, p := range c.paths {
		if !slices.Contains(allPaths, p) {
			return fmt.Errorf("unknown path %q (%s)", p, strings.Join(allPaths, ", "))
		}
		bin, target := c.daemonBinary(p)
		if bin == "" {
			continue
		}
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("path %s: %w (make %s)", p, err, target)
		}
	}
	if err := c.checkKube(); err != nil {
		return err
	}
	for _, m := range c.measure {
		if !slices.Contains(allMeasures, m) {
			return fmt.Errorf("unknown measurement %q (%s)", m, strings.Join(allMeasures, ", "))
		}
	}
	if c.rounds < 1 || c.rounds > 50 || c.rounds > 1 && c.write != "" {
		return fmt.Errorf("-rounds %d: from 1 to 50, and more than 1 only without -write (BENCHMARKS.md's sections hold one run)", c.rounds)
	}
	if c.perf && !c.measures("latency") {
		return errors.New("-perf counts during the round trips: -measure must include latency")
	}
	if len(c.paths) == 0 || len(c.measure) == 0 || c.iperfTime < time.Second || c.udpTime <= 0 || c.roundTrips <= 0 {
		return fmt.Errorf("nothing to measure: paths %v, -t %v, -udp-time %v, -round-trips %d",
			c.paths, c.iperfTime, c.udpTime, c.roundTrips)
	}
	if c.iperfTime > 60*time.Second || c.udpTime > 30*time.Second || c.roundTrips > 1000000 {
		return fmt.Errorf("runs are bounded: -t <= 60s, -udp-time <= 30s, -round-trips <= 1e6")
	}
	return nil
}

// daemonBinary is the program a path runs on its hosts and the make
// target that builds it; "" for the hand-made paths, which run none.
func (c *config) daemonBinary(path string) (bin, target string) {
	switch {
	case path == flanneldPath:
		return c.flanneld, "flanneld"
	case path == wireguardGoPath:
		bin, _ := testbed.WireGuardGoBinary()
		return bin, "deps"
	case needsFlannelu(path):
		return c.flannelu, "build"
	}
	return "", ""
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func parseRates(s string) ([]int, error) {
	var rates []int
	for _, f := range splitList(s) {
		r, err := strconv.Atoi(strings.TrimSuffix(strings.ToLower(f), "pps"))
		if err != nil || r < 0 || r > 10000000 {
			return nil, fmt.Errorf("bad rate %q (packets/s, 0 = max, at most 1e7)", f)
		}
		rates = append(rates, r)
	}
	return rates, nil
}
