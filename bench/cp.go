//go:build linux

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/flannelu/flannelu/backend/leftover"
	"github.com/flannelu/flannelu/testbed"
)

// controlPlane is the -measure of the control-plane harness: flannelu,
// flanneld v0.20.2 and flanneld v0.28.9, each on a namespace host of its
// own, watching one real etcd and one real kube-apiserver in which a
// generator (testbed.Peers) registers N peer hosts as flanneld v0.28.9
// publishes itself, for each store and backend: start-up into N, a burst
// of joins and deletions, a steady state with annotation updates, etcd
// compaction under the running watches. See cpRun.
const controlPlane = "control-plane"

// cpConfig is the control-plane harness's settings (flags -nodes ...).
type cpConfig struct {
	nodes        []int
	stores       []string
	backends     []string
	daemons      []string
	phases       []string
	burst        int
	burstTime    time.Duration
	steady       time.Duration
	steadyPeriod time.Duration
	timeout      time.Duration
	flannelu     string
	flanneldV020 string
	flanneldV028 string
	flanneluArgs []string
	write        string
	jsonOut      string
	command      string
	section      string // -cp-section: a BENCHMARKS.md section (and JSON file) of this run's own
}

var allPhases = []string{"startup", "burst", "steady", "compaction"}

// cpFlags registers the harness's flags on fs; the result is filled once
// fs is parsed.
type cpFlags struct {
	nodes, stores, backends, daemons, phases *string
	burst                                    *int
	burstTime, steady, steadyPeriod, timeout *time.Duration
	flanneldV028, section, render            *string
}

func addControlPlaneFlags(fs *flag.FlagSet) *cpFlags {
	return &cpFlags{
		nodes:        fs.String("nodes", "1000", "control-plane: cluster sizes N (peer hosts in the store), comma-separated; 0 measures a daemon's start alone"),
		stores:       fs.String("stores", "etcd,kube", "control-plane: stores (etcd, kube)"),
		backends:     fs.String("backends", "udp,vxlan,host-gw", "control-plane: backends"),
		daemons:      fs.String("daemons", strings.Join(allDaemons, ","), "control-plane: daemons compared"),
		phases:       fs.String("phases", strings.Join(allPhases, ","), "control-plane: phases ("+strings.Join(allPhases, ", ")+")"),
		burst:        fs.Int("burst", 1000, "control-plane: joins (then deletions) in the burst"),
		burstTime:    fs.Duration("burst-time", 10*time.Second, "control-plane: how long the joins (and the deletions) of the burst take"),
		steady:       fs.Duration("steady", time.Minute, "control-plane: length of the steady state (10m for a long run)"),
		steadyPeriod: fs.Duration("steady-period", 5*time.Minute, "control-plane: every peer's annotation is updated once per period in the steady state (kube)"),
		timeout:      fs.Duration("cp-timeout", 60*time.Second, "control-plane: longest wait for a daemon's start or for an event to reach every watcher"),
		flanneldV028: fs.String("flanneld-v028", "bin/flanneld-v0.28.9", "control-plane: flanneld v0.28.9 (make flanneld)"),
		render:       fs.String("cp-render", "", "control-plane: measure nothing; write the markdown of this run's JSON (to -write's file, or stdout)"),
		section:      fs.String("cp-section", "", "control-plane: with -write, a section of this name (and bench/results-control-plane-NAME.json) instead of the main one, e.g. for a longer steady state"),
	}
}

func (f *cpFlags) config(cfg *config) (*cpConfig, error) {
	c := &cpConfig{stores: splitList(*f.stores), backends: splitList(*f.backends), daemons: splitList(*f.daemons),
		phases: splitList(*f.phases), burst: *f.burst, burstTime: *f.burstTime, steady: *f.steady,
		steadyPeriod: *f.steadyPeriod, timeout: *f.timeout, flannelu: cfg.flannelu, flanneldV020: cfg.flanneld,
		flanneluArgs: cfg.args, write: cfg.write, jsonOut: cfg.jsonOut, command: cfg.command, section: *f.section}
	for _, s := range splitList(*f.nodes) {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > 7000 {
			return nil, fmt.Errorf("-nodes %q: from 0 to 7000", s)
		}
		c.nodes = append(c.nodes, n)
	}
	var err error
	if c.flanneldV028, err = filepath.Abs(*f.flanneldV028); err != nil {
		return nil, err
	}
	if c.jsonOut == "" && c.write != "" {
		c.jsonOut = filepath.Join("bench", "results-control-plane.json")
		if c.section != "" {
			c.jsonOut = filepath.Join("bench", "results-control-plane-"+c.section+".json")
		}
	}
	return c, c.check()
}

func (c *cpConfig) check() error {
	for _, list := range []struct {
		name     string
		got, all []string
	}{{"-stores", c.stores, []string{"etcd", "kube"}}, {"-backends", c.backends, []string{"udp", "vxlan", "host-gw"}},
		{"-daemons", c.daemons, allDaemons}, {"-phases", c.phases, allPhases}} {
		for _, v := range list.got {
			if !slices.Contains(list.all, v) {
				return fmt.Errorf("%s: unknown %q (%s)", list.name, v, strings.Join(list.all, ", "))
			}
		}
		if len(list.got) == 0 {
			return fmt.Errorf("%s: empty", list.name)
		}
	}
	for _, d := range c.daemons {
		bin := map[string]string{daemonFlannelu: c.flannelu, daemonV020: c.flanneldV020, daemonV028: c.flanneldV028}[d]
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("daemon %s: %w (make build; make flanneld)", d, err)
		}
	}
	if slices.Contains(c.stores, "kube") {
		if _, err := testbed.KubeAPIServerBinary(); err != nil {
			return err
		}
	}
	if c.burst < 1 || c.burst > 2000 || c.burstTime <= 0 || c.burstTime > time.Minute || c.steady < 0 || c.steady > 15*time.Minute ||
		c.timeout < 5*time.Second || c.timeout > 5*time.Minute || c.steadyPeriod < time.Second {
		return errors.New("bounded runs: -burst 1..2000, -burst-time up to 1m, -steady up to 15m, -cp-timeout 5s..5m, -steady-period at least 1s")
	}
	if len(c.nodes) == 0 {
		return errors.New("-nodes: empty")
	}
	if strings.Trim(c.section, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
		return fmt.Errorf("-cp-section %q: lower-case letters, digits and '-' only (it names a marker and a file)", c.section)
	}
	return nil
}

func (c *cpConfig) phase(p string) bool { return slices.Contains(c.phases, p) }

// combo is one cluster: a store, a backend, N peers.
type combo struct {
	store, backend string
	nodes          int
}

func (c combo) String() string { return fmt.Sprintf("%s %s N=%d", c.store, c.backend, c.nodes) }

// cpRun is one harness run: one testbed (host 1: etcd and kube-apiserver;
// one host per daemon), reused for every combo.
type cpRun struct {
	cfg     *cpConfig
	cluster *testbed.Cluster
	dir     string
	audit   *auditLog
	peers   *testbed.Peers
	network netip.Prefix
	daemons []*cpDaemon
	report  *cpReport
}

// cpNetwork is the overlay: /29 subnets give 8,192 peers in the /16.
var cpNetwork = netip.MustParsePrefix("198.18.0.0/16")

const cpSubnetLen = 29

func runControlPlane(cfg *config) error {
	if *cfg.cp.render != "" {
		return renderControlPlane(*cfg.cp.render, cfg.write, *cfg.cp.section)
	}
	cp, err := cfg.cp.config(cfg)
	if err != nil {
		return err
	}
	r := &cpRun{cfg: cp, network: cpNetwork, report: newCPReport(cp)}
	// A run stopped by a signal takes its namespaces, servers and daemons
	// with it; the combos measured so far are already written.
	var once sync.Once
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "control-plane: %v: tearing down\n", s)
		once.Do(r.tearDown)
		os.Exit(130)
	}()
	defer signal.Stop(sig)
	if err := r.setUp(); err != nil {
		once.Do(r.tearDown)
		return err
	}
	defer once.Do(r.tearDown)
	for _, n := range cp.nodes {
		for _, store := range cp.stores {
			for _, backend := range cp.backends {
				c := combo{store: store, backend: backend, nodes: n}
				fmt.Fprintf(os.Stderr, "control-plane: %s (load %s)\n", c, loadAvg())
				res := r.runCombo(c)
				r.report.Combos = append(r.report.Combos, res)
				if err := r.writeOutputs(); err != nil {
					return err
				}
			}
		}
	}
	fmt.Print(cpMarkdown(r.report, cp.section))
	return nil
}

func (r *cpRun) setUp() (err error) {
	if r.dir, err = os.MkdirTemp("", testbed.OwnPrefix()+"cp-"); err != nil {
		return err
	}
	policy := filepath.Join(r.dir, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o644); err != nil {
		return err
	}
	r.audit = &auditLog{path: filepath.Join(r.dir, "audit.log")}
	kube := slices.Contains(r.cfg.stores, "kube")
	opts := testbed.ClusterOptions{
		Bed:      testbed.Options{Name: "cp", Hosts: 1 + len(r.cfg.daemons), Dir: r.dir},
		Flannelu: r.cfg.flannelu,
		Config:   r.netConfig("vxlan"),
		Kube:     kube,
	}
	if kube {
		opts.KubeAPIArgs = []string{"--audit-policy-file=" + policy, "--audit-log-path=" + r.audit.path,
			"--audit-log-maxsize=0", "--audit-log-maxbackup=0"}
	}
	if r.cluster, err = testbed.NewCluster(opts); err != nil {
		return err
	}
	r.peers = &testbed.Peers{Network: r.network, SubnetLen: cpSubnetLen, Etcd: r.cluster.Client, Workers: 16}
	if kube {
		rc := r.cluster.KubeAPI.RESTConfig(testbed.AdminUser)
		rc.QPS, rc.Burst = 5000, 5000
		if r.peers.Kube, err = kubernetes.NewForConfig(rc); err != nil {
			return err
		}
	}
	for i, kind := range r.cfg.daemons {
		h := r.cluster.Hosts[i+1]
		d := &cpDaemon{kind: kind, host: h}
		if d.proxy, err = testbed.NewEtcdProxy(r.cluster.Hosts[0], 23790+i, testbed.ListenAddr(r.cluster.Hosts[0].Addr, testbed.EtcdPort)); err != nil {
			return err
		}
		if kube {
			// The watchers' own podCIDRs: the last subnets of the network.
			if err := r.cluster.CreateNode(h.Index, r.peers.SubnetAt(r.peers.Subnets()-1-i).String()); err != nil {
				return err
			}
		}
		r.daemons = append(r.daemons, d)
	}
	return nil
}

func (r *cpRun) tearDown() {
	for _, d := range r.daemons {
		d.stop()
		if d.proxy != nil {
			d.proxy.Close()
		}
	}
	if r.cluster != nil {
		r.cluster.Close()
	}
	if r.dir != "" && os.Getenv("FLANNELU_BENCH_KEEP") == "" {
		os.RemoveAll(r.dir)
	} else if r.dir != "" {
		fmt.Fprintln(os.Stderr, "control-plane: kept", r.dir)
	}
}

// netConfig is the network config of a backend: etcd's (with the
// watchers' own subnets kept to the top of the network, away from the
// generator's) or net-conf.json.
func (r *cpRun) netConfig(backend string) string {
	top := r.network.Masked().Addr().As4()
	top[2] = 255
	min, max := top, top
	max[3] = 248
	return fmt.Sprintf(`{"Network":%q,"SubnetLen":%d,"SubnetMin":%q,"SubnetMax":%q,"Backend":{"Type":%q}}`,
		r.network, cpSubnetLen, netip.AddrFrom4(min), netip.AddrFrom4(max), backend)
}

func (r *cpRun) configure(c combo) error {
	cfg := r.netConfig(c.backend)
	if c.store == "kube" {
		return os.WriteFile(r.cluster.NetConfPath, []byte(cfg), 0o644)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := r.cluster.Client.Put(ctx, testbed.EtcdPrefix+"/config", cfg)
	return err
}

func subnetsOf(peers []testbed.Peer) []netip.Prefix {
	out := make([]netip.Prefix, len(peers))
	for i, p := range peers {
		out[i] = p.Subnet
	}
	return out
}

// runCombo measures every daemon in one cluster and leaves the testbed
// clean for the next.
func (r *cpRun) runCombo(c combo) comboResult {
	res := comboResult{Store: c.store, Backend: c.backend, Nodes: c.nodes, Load: loadAvg()}
	r.peers.Store, r.peers.Backend = c.store, c.backend
	r.peers.Restart()
	defer r.cleanUp(c, &res)
	if err := r.configure(c); err != nil {
		res.Error = err.Error()
		return res
	}
	peers := r.peers.Next(c.nodes)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := r.peers.CreateAll(ctx, peers); err != nil {
		res.Error = "generator: " + err.Error()
		return res
	}
	res.GenSeconds = time.Since(start).Seconds()
	for _, d := range r.daemons {
		res.Daemons = append(res.Daemons, &daemonResult{Daemon: d.kind})
	}
	for i, d := range r.daemons {
		res.Daemons[i].Startup = r.startUp(d, c, peers, res.Daemons[i])
	}
	if r.cfg.phase("burst") {
		r.burst(c, res.Daemons)
	}
	if c.nodes > 0 && r.cfg.phase("steady") && r.cfg.steady > 0 {
		r.steadyState(c, peers, res.Daemons)
	}
	if c.nodes > 0 && c.store == "etcd" && r.cfg.phase("compaction") {
		r.compaction(c, peers, res.Daemons)
	}
	return res
}

// cleanUp stops the daemons, removes their devices and routes, and
// deletes every peer the combo made.
func (r *cpRun) cleanUp(c combo, res *comboResult) {
	for _, d := range r.daemons {
		d.stop()
		err := d.host.Do(func() error {
			return leftover.Remove(leftover.Options{Backend: "none", ExtIface: ifaceIndex(d.host), Networks: []netip.Prefix{r.network}})
		})
		if err != nil {
			res.Error += " clean-up " + d.host.Name + ": " + err.Error()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := r.peers.DeleteAll(ctx, r.peers.Made()); err != nil {
		res.Error += " clean-up: " + err.Error()
	}
}

func ifaceIndex(h *testbed.Host) int {
	idx := 0
	h.Do(func() error { //nolint:errcheck // 0: no route is looked at
		ifc, err := net.InterfaceByName(h.Iface)
		if err == nil {
			idx = ifc.Index
		}
		return err
	})
	return idx
}

// startUp starts d into the cluster and measures: subnet.env, every
// peer's route (or route-table entry), memory, CPU, requests made.
func (r *cpRun) startUp(d *cpDaemon, c combo, peers []testbed.Peer, dr *daemonResult) *startupResult {
	s := &startupResult{Load: loadAvg()}
	callsBefore := d.proxy.Calls()
	if err := r.start(d, c, "start"); err != nil {
		dr.Errors = append(dr.Errors, err.Error())
		return s
	}
	env, err := d.waitEnv(r.cfg.timeout)
	if err != nil {
		dr.Errors = append(dr.Errors, err.Error())
		return s
	}
	s.EnvS = env.Sub(d.started).Seconds()
	subnets := subnetsOf(peers)
	s.Complete = d.waitPresent(subnets, len(subnets), r.cfg.timeout)
	if s.Complete {
		last := d.obs.lastAdd(subnets)
		if last.IsZero() || last.Before(env) {
			last = env
		}
		s.FullS = last.Sub(d.started).Seconds()
	} else {
		s.Missing = len(subnets) - d.obs.countPresent(subnets)
		dr.Errors = append(dr.Errors, fmt.Sprintf("start-up: %d of %d peers missing after %v", s.Missing, len(subnets), r.cfg.timeout))
	}
	s.Stat = d.stat()
	// Memory settles once the start-up's garbage is collected; CPU is
	// the whole start-up's.
	time.Sleep(2 * time.Second)
	s.Settled = d.stat()
	end := time.Now()
	if c.store == "kube" {
		s.Requests = r.audit.count(d.host.Addr.String(), d.started.Add(-time.Second), end)
		s.RequestsTotal = total(s.Requests)
	} else {
		s.RequestsTotal = int(d.proxy.Calls() - callsBefore)
	}
	dr.Errors = append(dr.Errors, d.obs.errors()...)
	return s
}
