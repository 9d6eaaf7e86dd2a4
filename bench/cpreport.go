//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// The markers around the control-plane section of BENCHMARKS.md.
const (
	cpBeginMarker = "<!-- control-plane:begin -->"
	cpEndMarker   = "<!-- control-plane:end -->"
)

// cpReport is one control-plane run.
type cpReport struct {
	machine
	Settings cpSettings    `json:"settings"`
	Combos   []comboResult `json:"combos"`
	End      string        `json:"end,omitempty"`
	LoadEnd  string        `json:"load_avg_at_end,omitempty"`
}

type cpSettings struct {
	Nodes            []int    `json:"nodes"`
	Daemons          []string `json:"daemons"`
	Phases           []string `json:"phases"`
	Burst            int      `json:"burst"`
	BurstSeconds     float64  `json:"burst_seconds"`
	SteadySeconds    float64  `json:"steady_seconds"`
	SteadyPeriodSecs float64  `json:"steady_period_seconds"`
	SubnetLen        int      `json:"subnet_len"`
}

type comboResult struct {
	Store      string          `json:"store"`
	Backend    string          `json:"backend"`
	Nodes      int             `json:"nodes"`
	Load       string          `json:"load_avg"`
	GenSeconds float64         `json:"generator_seconds"`
	Daemons    []*daemonResult `json:"daemons"`
	Error      string          `json:"error,omitempty"`
}

type daemonResult struct {
	Daemon     string            `json:"daemon"`
	Startup    *startupResult    `json:"startup,omitempty"`
	Burst      *burstResult      `json:"burst,omitempty"`
	Steady     *steadyResult     `json:"steady,omitempty"`
	Compaction *compactionResult `json:"compaction,omitempty"`
	Errors     []string          `json:"errors,omitempty"`
}

type startupResult struct {
	EnvS          float64        `json:"subnet_env_s"`
	FullS         float64        `json:"full_state_s"`
	Complete      bool           `json:"complete"`
	Missing       int            `json:"missing,omitempty"`
	Stat          procStat       `json:"at_full_state"`
	Settled       procStat       `json:"two_s_later"`
	Requests      map[string]int `json:"requests,omitempty"`
	RequestsTotal int            `json:"requests_total"`
	Load          string         `json:"load_avg"`
}

type burstResult struct {
	Joins          int     `json:"joins"`
	Deletes        int     `json:"deletes"`
	JoinP50        float64 `json:"join_p50_ms"`
	JoinP99        float64 `json:"join_p99_ms"`
	JoinMax        float64 `json:"join_max_ms"`
	JoinLost       int     `json:"join_lost"`
	JoinRepeated   int     `json:"join_repeated"`
	DeleteP50      float64 `json:"delete_p50_ms"`
	DeleteP99      float64 `json:"delete_p99_ms"`
	DeleteMax      float64 `json:"delete_max_ms"`
	DeleteLost     int     `json:"delete_lost"`
	DeleteRepeated int     `json:"delete_repeated"`
	QueueMax       float64 `json:"queue_max"` // -1: the daemon does not say
	GeneratorError string  `json:"generator_error,omitempty"`
	Load           string  `json:"load_avg"`
}

type steadyResult struct {
	Seconds         float64        `json:"seconds"`
	Updates         int            `json:"annotation_updates"`
	CPUSec          float64        `json:"cpu_s"`
	MaxCPUPerSecond float64        `json:"max_cpu_s_in_1s"`
	Stat            procStat       `json:"at_end"`
	Requests        map[string]int `json:"requests,omitempty"`
	RequestsTotal   int            `json:"requests_total"`
	RequestsPerHour float64        `json:"requests_per_hour"`
	Load            string         `json:"load_avg"`
}

type compactionResult struct {
	Changes         int     `json:"changes"`
	CompactRevision int64   `json:"compact_revision"`
	CatchUpS        float64 `json:"catch_up_s"`
	Complete        bool    `json:"complete"`
	LogLines        int     `json:"log_lines_10s"`
	CPUSec          float64 `json:"cpu_s_10s"`
	Calls           int64   `json:"etcd_calls_10s"`
	Exited          bool    `json:"exited,omitempty"`
	Error           string  `json:"error,omitempty"`
	Load            string  `json:"load_avg"`
}

func newCPReport(c *cpConfig) *cpReport {
	return &cpReport{
		machine: newMachine(c.command, c.flannelu),
		Settings: cpSettings{Nodes: c.nodes, Daemons: c.daemons, Phases: c.phases, Burst: c.burst,
			BurstSeconds: c.burstTime.Seconds(), SteadySeconds: c.steady.Seconds(),
			SteadyPeriodSecs: c.steadyPeriod.Seconds(), SubnetLen: cpSubnetLen},
	}
}

// writeOutputs writes the JSON and the markdown section after each combo,
// so that a run cut short keeps what it measured.
func (r *cpRun) writeOutputs() error {
	rep := r.report
	rep.End, rep.LoadEnd = time.Now().UTC().Format("15:04 UTC"), loadAvg()
	if r.cfg.jsonOut != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(r.cfg.jsonOut), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(r.cfg.jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if r.cfg.write == "" {
		return nil
	}
	old, err := os.ReadFile(r.cfg.write)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	doc := replaceBetween(string(old), cpMarkdown(rep), cpBeginMarker, cpEndMarker)
	return os.WriteFile(r.cfg.write, []byte(doc), 0o644)
}

// cpMarkdown is the section: the run, then one table per measure with a
// row per cluster and daemon.
func cpMarkdown(rep *cpReport) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n## Control plane at scale: flannelu beside flanneld v0.20.2 and v0.28.9\n\n", cpBeginMarker)
	fmt.Fprintf(&b, "Generated by `%s` on %s (to %s). Machine: %s, %d cores, %.0f GiB, Linux %s, %s; flannelu %s. "+
		"Load average (1, 5, 15 min) at the start %s, at the end %s; each table row gives the 1-minute load when its "+
		"measure began: other work shared the machine, so times are upper bounds.\n\n",
		rep.Command, rep.Date, rep.End, rep.CPU, rep.Cores, rep.MemGiB, rep.Kernel, rep.Go, rep.Flannelu, rep.LoadAvg, rep.LoadEnd)
	fmt.Fprintf(&b, "One real etcd and one real kube-apiserver on host 1; each daemon on a namespace host of its own. "+
		"The generator (testbed.Peers) registers N peers as flanneld v0.28.9 publishes itself: etcd leases (24 h etcd "+
		"lease, flanneld's JSON), or Node objects as kubelet registers them (~6 KB: labels, conditions, 20 images) with "+
		"a /%d podCIDR and flanneld's annotations. Peer state is read from the kernel's route notifications (vxlan, "+
		"host-gw: the route is the last entry flannel programs for a peer) or, for udp, whose route table lives in the "+
		"daemon, from its log line for each peer. Requests: API server audit log by source address; etcd: gRPC calls "+
		"counted by a proxy in front of etcd.\n\n", rep.Settings.SubnetLen)
	writeStartupTable(&b, rep)
	writeBurstTable(&b, rep)
	writeSteadyTable(&b, rep)
	writeCompactionTable(&b, rep)
	writeCPErrors(&b, rep)
	b.WriteString(cpEndMarker + "\n")
	return b.String()
}

func load1(l string) string { f, _, _ := strings.Cut(l, " "); return f }

func writeStartupTable(b *strings.Builder, rep *cpReport) {
	b.WriteString("### Start-up into a cluster of N\n\n")
	b.WriteString("| store | backend | N | daemon | subnet.env (s) | full peer state (s) | RSS at full state (MB) | RSS 2 s later (MB) | CPU (s) | requests | load |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	eachDaemon(rep, func(c comboResult, d *daemonResult) {
		s := d.Startup
		if s == nil {
			return
		}
		full := fmt.Sprintf("%.2f", s.FullS)
		if !s.Complete {
			full = fmt.Sprintf("incomplete (%d missing)", s.Missing)
		}
		fmt.Fprintf(b, "| %s | %s | %d | %s | %.2f | %s | %.1f | %.1f | %.2f | %d | %s |\n", c.Store, c.Backend, c.Nodes, d.Daemon,
			s.EnvS, full, s.Stat.RSSMB, s.Settled.RSSMB, s.Settled.CPUSec, s.RequestsTotal, load1(s.Load))
	})
	b.WriteString("\n")
}

func writeBurstTable(b *strings.Builder, rep *cpReport) {
	if !rep.has(func(d *daemonResult) bool { return d.Burst != nil }) {
		return
	}
	fmt.Fprintf(b, "### Burst: %d joins in %.0f s, then %d deletions, into N\n\n", rep.Settings.Burst, rep.Settings.BurstSeconds, rep.Settings.Burst)
	b.WriteString("Latency from the generator's request to the watcher's kernel (or route table). Lost: never seen within the timeout; repeated: programmed more than once.\n\n")
	b.WriteString("| store | backend | N | daemon | join p50 (ms) | join p99 (ms) | join max (ms) | delete p50 (ms) | delete p99 (ms) | lost | repeated | max queue | load |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	eachDaemon(rep, func(c comboResult, d *daemonResult) {
		x := d.Burst
		if x == nil {
			return
		}
		q := "—"
		if x.QueueMax >= 0 {
			q = fmt.Sprintf("%.0f", x.QueueMax)
		}
		fmt.Fprintf(b, "| %s | %s | %d | %s | %.0f | %.0f | %.0f | %.0f | %.0f | %d / %d | %d / %d | %s | %s |\n", c.Store, c.Backend, c.Nodes,
			d.Daemon, x.JoinP50, x.JoinP99, x.JoinMax, x.DeleteP50, x.DeleteP99, x.JoinLost, x.DeleteLost,
			x.JoinRepeated, x.DeleteRepeated, q, load1(x.Load))
	})
	b.WriteString("\n")
}

func writeSteadyTable(b *strings.Builder, rep *cpReport) {
	if !rep.has(func(d *daemonResult) bool { return d.Steady != nil }) {
		return
	}
	fmt.Fprintf(b, "### Steady state (%.0f s; Kubernetes: every peer's node gets an annotation update once per %.0f s)\n\n",
		rep.Settings.SteadySeconds, rep.Settings.SteadyPeriodSecs)
	b.WriteString("| store | backend | N | daemon | updates | CPU (s) | max CPU in 1 s (s) | RSS (MB) | requests | requests per node per hour | by verb | load |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	eachDaemon(rep, func(c comboResult, d *daemonResult) {
		s := d.Steady
		if s == nil {
			return
		}
		fmt.Fprintf(b, "| %s | %s | %d | %s | %d | %.2f | %.2f | %.1f | %d | %.1f | %s | %s |\n", c.Store, c.Backend, c.Nodes, d.Daemon,
			s.Updates, s.CPUSec, s.MaxCPUPerSecond, s.Stat.RSSMB, s.RequestsTotal, s.RequestsPerHour, verbs(s.Requests), load1(s.Load))
	})
	b.WriteString("\n")
}

func verbs(m map[string]int) string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []string
	for _, k := range keys {
		out = append(out, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(out, ", ")
}

func writeCompactionTable(b *strings.Builder, rep *cpReport) {
	if !rep.has(func(d *daemonResult) bool { return d.Compaction != nil }) {
		return
	}
	b.WriteString("### etcd compaction under the running watch\n\n")
	b.WriteString("Each daemon's etcd connection held while 50 leases are deleted and 50 added and etcd is compacted at its revision, then dropped: the watch resumes from a compacted revision. Catch-up: until the kernel (route table) shows the 100 changes; then 10 s of log lines, CPU and etcd calls.\n\n")
	b.WriteString("| backend | N | daemon | catch-up (s) | log lines in 10 s | CPU in 10 s (s) | etcd calls in 10 s | load |\n|---|---|---|---|---|---|---|---|\n")
	eachDaemon(rep, func(c comboResult, d *daemonResult) {
		x := d.Compaction
		if x == nil {
			return
		}
		catch := fmt.Sprintf("%.2f", x.CatchUpS)
		if !x.Complete {
			catch = "never"
		}
		if x.Exited {
			catch += " (exited)"
		}
		fmt.Fprintf(b, "| %s | %d | %s | %s | %d | %.2f | %d | %s |\n", c.Backend, c.Nodes, d.Daemon, catch, x.LogLines, x.CPUSec, x.Calls, load1(x.Load))
	})
	b.WriteString("\n")
}

func writeCPErrors(b *strings.Builder, rep *cpReport) {
	var lines []string
	for _, c := range rep.Combos {
		if c.Error != "" {
			lines = append(lines, fmt.Sprintf("- %s %s N=%d: %s", c.Store, c.Backend, c.Nodes, oneLine(c.Error)))
		}
		for _, d := range c.Daemons {
			for _, e := range d.Errors {
				lines = append(lines, fmt.Sprintf("- %s %s N=%d %s: %s", c.Store, c.Backend, c.Nodes, d.Daemon, oneLine(e)))
			}
		}
	}
	if len(lines) == 0 {
		return
	}
	b.WriteString("### What went wrong\n\n" + strings.Join(lines, "\n") + "\n\n")
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 400 {
		s = s[:400] + "…"
	}
	return s
}

// eachDaemon calls f for every daemon of every cluster, in order.
func eachDaemon(rep *cpReport, f func(comboResult, *daemonResult)) {
	for _, c := range rep.Combos {
		for _, d := range c.Daemons {
			f(c, d)
		}
	}
}

func (rep *cpReport) has(f func(*daemonResult) bool) bool {
	for _, c := range rep.Combos {
		for _, d := range c.Daemons {
			if f(d) {
				return true
			}
		}
	}
	return false
}
