//go:build linux

package main

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/flannelu/flannelu/subnet"
	"github.com/flannelu/flannelu/testbed"
)

// The daemons the control-plane measure compares.
const (
	daemonFlannelu = "flannelu"
	daemonV020     = "flanneld-v0.20.2"
	daemonV028     = "flanneld-v0.28.9"
)

var allDaemons = []string{daemonFlannelu, daemonV020, daemonV028}

// cpDaemon is one daemon on its own host, watching the cluster.
type cpDaemon struct {
	kind       string
	host       *testbed.Host
	proxy      *testbed.EtcdProxy // etcd store: its connection to etcd
	proc       *testbed.Proc
	subnetFile string
	obs        *observer
	started    time.Time
}

// flanneld reports whether the daemon is a flanneld (glog lines, no
// /metrics).
func (d *cpDaemon) flanneld() bool { return d.kind != daemonFlannelu }

func (r *cpRun) binary(kind string) string {
	switch kind {
	case daemonV020:
		return r.cfg.flanneldV020
	case daemonV028:
		return r.cfg.flanneldV028
	}
	return r.cfg.flannelu
}

// start launches d for the store and backend of c, logging to a file of
// its own, with an observer of its peer state from before its start.
func (r *cpRun) start(d *cpDaemon, c combo, tag string) error {
	h := d.host
	d.subnetFile = filepath.Join(r.cluster.Dir, h.Name, "subnet.env")
	os.MkdirAll(filepath.Dir(d.subnetFile), 0o755) //nolint:errcheck // the start fails visibly without it
	os.Remove(d.subnetFile)
	d.obs = newObserver(r.network, r.peers.SubnetLen)
	if c.backend == "udp" {
		d.obs.watchLog(filepath.Join(r.cluster.Dir, d.logName(c, tag)+".log"), d.flanneld())
	} else if err := d.obs.watchRoutes(h); err != nil {
		return err
	}
	args := []string{r.binary(d.kind)}
	if c.store == "kube" {
		args = append([]string{"env", "NODE_NAME=" + h.Name}, args...)
		args = append(args, "--kube-subnet-mgr", "--kubeconfig-file", r.cluster.Kubeconfig, "--net-config-path", r.cluster.NetConfPath)
	} else {
		args = append(args, "--etcd-endpoints", "http://"+d.proxy.Addr)
	}
	args = append(args, "--iface", h.Iface, "--subnet-file", d.subnetFile)
	if d.kind == daemonFlannelu {
		args = append(args, "--healthz-port", strconv.Itoa(testbed.HealthPort), "--healthz-ip", h.Addr.String())
		args = append(args, r.cfg.flanneluArgs...)
	}
	d.started = time.Now()
	var err error
	d.proc, err = r.cluster.Start(h.NS, d.logName(c, tag), args...)
	return err
}

func (d *cpDaemon) logName(c combo, tag string) string {
	return fmt.Sprintf("%s-%s-%s-%d-%s", d.kind, c.store, c.backend, c.nodes, tag)
}

// stop ends the daemon (SIGTERM) and its observer.
func (d *cpDaemon) stop() {
	if d.proc != nil {
		d.proc.Stop() //nolint:errcheck // flanneld v0.20.2 panics on SIGTERM; the process is gone either way
		d.proc = nil
	}
	if d.obs != nil {
		d.obs.stop()
		d.obs = nil
	}
}

// waitEnv waits until subnet.env exists and returns when it appeared.
func (d *cpDaemon) waitEnv(timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := subnet.ReadEnv(d.subnetFile); err == nil {
			return time.Now(), nil
		}
		if d.proc.Exited() {
			return time.Time{}, fmt.Errorf("%s exited before writing subnet.env:%s", d.kind, testbed.Tail(d.proc.Log, 15))
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%s wrote no subnet.env in %v:%s", d.kind, timeout, testbed.Tail(d.proc.Log, 15))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitPresent waits until want of subnets are routed (or, with want 0,
// none is) and reports whether that happened before timeout.
func (d *cpDaemon) waitPresent(subnets []netip.Prefix, want int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if d.obs.countPresent(subnets) == want {
			return true
		}
		if time.Now().After(deadline) || d.proc.Exited() {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// procStat is a process's memory and CPU time.
type procStat struct {
	RSSMB  float64 `json:"rss_mb"`
	PeakMB float64 `json:"peak_rss_mb"`
	CPUSec float64 `json:"cpu_s"`
}

// stat reads /proc of the daemon: `ip netns exec` and `env` exec the
// daemon in place, so the process started is the daemon.
func (d *cpDaemon) stat() procStat {
	var s procStat
	if d.proc == nil || d.proc.Cmd.Process == nil {
		return s
	}
	pid := strconv.Itoa(d.proc.Cmd.Process.Pid)
	if b, err := os.ReadFile("/proc/" + pid + "/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			kb, _ := strconv.ParseFloat(f[1], 64)
			switch f[0] {
			case "VmRSS:":
				s.RSSMB = kb / 1024
			case "VmHWM:":
				s.PeakMB = kb / 1024
			}
		}
	}
	if b, err := os.ReadFile("/proc/" + pid + "/stat"); err == nil {
		// Fields after the command (which may hold spaces): utime is the
		// 14th field of the line, stime the 15th, in clock ticks (100/s).
		if i := strings.LastIndexByte(string(b), ')'); i > 0 {
			f := strings.Fields(string(b)[i+1:])
			if len(f) > 13 {
				ut, _ := strconv.ParseFloat(f[11], 64)
				st, _ := strconv.ParseFloat(f[12], 64)
				s.CPUSec = (ut + st) / 100
			}
		}
	}
	return s
}

// metric reads one sample of flannelu's /metrics; ok is false for a
// flanneld or when it is not there.
func (d *cpDaemon) metric(name string) (float64, bool) {
	if d.flanneld() || d.proc == nil {
		return 0, false
	}
	n := &testbed.Node{Host: d.host}
	code, body, err := n.Get("/metrics")
	if err != nil || code != 200 {
		return 0, false
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// logLines counts the lines the daemon logged since off (a byte offset
// of its log) and returns the new offset.
func (d *cpDaemon) logLines(off int64) (lines int, end int64) {
	b, err := os.ReadFile(d.proc.Log)
	if err != nil || int64(len(b)) < off {
		return 0, off
	}
	return strings.Count(string(b[off:]), "\n"), int64(len(b))
}
