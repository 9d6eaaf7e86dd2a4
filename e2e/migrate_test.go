package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flannelu/flannelu/handover/incumbent"
	"github.com/flannelu/flannelu/subnet"
	"github.com/flannelu/flannelu/testbed"
)

// The flanneld versions the migration tests name.
const (
	flanneldOld   = "v0.20.2"
	flanneldToday = "v0.28.9"
)

// TestFlanneldMigration walks the migration an operator walks, on host 1
// of two (host 2 runs flannelu throughout), for each backend, with
// flanneld and flannelu given the very same flags and subnet file:
// flannelu started beside a running flanneld v0.28.9 waits without
// touching the node's network state and takes over within a second of
// flanneld's exit (the surge); stopped, it leaves the node to a flanneld
// v0.20.2 started next (the rollback); then the same from v0.20.2 and
// back to v0.28.9. A ping stream at 100/s between the hosts' pods runs
// through each step: vxlan and host-gw lose nothing, udp's outage is at
// most a second.
func TestFlanneldMigration(t *testing.T) {
	testbed.RequireRoot(t)
	t.Parallel()
	today, old := flanneldBinaryOf(t, flanneldV028Bin), flanneldBinaryOf(t, flanneldBin)
	for _, backend := range []string{"udp", "vxlan", "host-gw"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			m := newMigration(t, backend, today)
			t.Run("surge from flanneld "+flanneldToday, func(t *testing.T) { m.surge(t) })
			t.Run("rollback to flanneld "+flanneldOld, func(t *testing.T) { m.rollback(t, old) })
			t.Run("surge from flanneld "+flanneldOld, func(t *testing.T) { m.surge(t) })
			t.Run("rollback to flanneld "+flanneldToday, func(t *testing.T) { m.rollback(t, today) })
		})
	}
}

// migration is host 1 of a two-host cluster, where flanneld and flannelu
// take turns with the same flags.
type migration struct {
	c       *testbed.Cluster
	backend string
	h       *testbed.Host
	args    []string // the flags both get
	file    string   // their subnet file
	env     subnet.Env
	daemon  *testbed.Proc // what runs on host 1 now
	steps   int
}

// newMigration starts flannelu and a pod on host 2, then flanneld on host
// 1 with a pod of its subnet.
func newMigration(t *testing.T, backend, flanneld string) *migration {
	t.Helper()
	short := map[string]string{"udp": "mu", "vxlan": "mv", "host-gw": "mh"}[backend]
	c := newCluster(t, "e2e-"+short, 2, ipv4.config(backend))
	if err := startNode(t, c, 2, "--ip-masq").AddPods(1); err != nil {
		t.Fatal(err)
	}
	h := c.Hosts[0]
	m := &migration{c: c, backend: backend, h: h, file: c.Dir + "/" + h.Name + "/subnet.env"}
	m.args = []string{"--etcd-endpoints", c.EtcdEndpoints(), "--subnet-file", m.file,
		"--healthz-port", strconv.Itoa(testbed.HealthPort), "--healthz-ip", h.Addr.String(), "--ip-masq"}
	started := time.Now()
	m.daemon = m.start(t, flanneld)
	if err := testbed.Eventually(eventDeadline, func() error {
		var err error
		if m.env, err = subnet.ReadEnv(m.file); err != nil && m.daemon.Exited() {
			return nil
		}
		return err
	}); err != nil || m.daemon.Exited() {
		t.Fatalf("flanneld wrote no subnet.env (%v):%s", err, testbed.Tail(m.daemon.Log, 20))
	}
	gateway := netip.PrefixFrom(m.env.Subnet.Masked().Addr().Next(), m.env.Subnet.Bits())
	if err := h.AddPods(1, gateway, m.env.MTU); err != nil {
		t.Fatal(err)
	}
	// For comparison with a rollback's: flanneld's start on a fresh node.
	if running, err := klogTime(m.daemon.Log, "Running backend."); err == nil {
		t.Logf("flanneld's backend ran %v into its start on a fresh node", running.Sub(started).Round(time.Millisecond))
	}
	waitPing(t, h.Pods[0], c.Hosts[1].Pods[0].Addr)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("host 1's last daemon:%s", testbed.Tail(m.daemon.Log, 40))
		}
	})
	return m
}

// start runs bin (flanneld or flannelu) on host 1 with the migration's flags.
func (m *migration) start(t *testing.T, bin string) *testbed.Proc {
	t.Helper()
	m.steps++
	name := fmt.Sprintf("host1-%d-%s", m.steps, strings.TrimPrefix(bin[strings.LastIndex(bin, "/")+1:], "flanneld-"))
	p, err := m.c.Start(m.h.NS, name, append([]string{bin}, m.args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// surge starts flannelu beside the running flanneld: it must wait, touch
// nothing, and take over once flanneld is stopped.
func (m *migration) surge(t *testing.T) {
	ping := startStampedPing(t, m.c, fmt.Sprintf("ping-surge-%d", m.steps))
	before := nodeState(t, m.h, m.file)
	fu := m.start(t, flannelu)
	flanneld := m.daemon
	m.daemon = fu
	if err := fu.WaitLog(regexp.MustCompile(regexp.QuoteMeta(incumbent.Waiting)), eventDeadline); err != nil {
		t.Fatal(err)
	}
	// flannelu keeps trying the health port flanneld holds: a prober
	// (kubelet) is answered, by flanneld.
	if code, body, err := (&testbed.Node{Host: m.h}).Get("/healthz"); err != nil || code != 200 {
		t.Errorf("/healthz while both run: %d %q %v", code, body, err)
	}
	if after := nodeState(t, m.h, m.file); after != before {
		t.Errorf("flannelu changed the node's network state while flanneld runs:\n%s", lineDiff(before, after))
	}
	if fu.Exited() {
		t.Fatalf("flannelu exited beside flanneld:%s", testbed.Tail(fu.Log, 10))
	}
	flanneld.Stop() //nolint:errcheck // v0.20.2 panics on SIGTERM (see flannel-compat.md)
	stopped := time.Now()
	if err := fu.WaitLog(backendRunning, eventDeadline); err != nil {
		t.Fatal(err)
	}
	tookOver := logTime(t, fu.Log, "backend running", 1).Sub(stopped)
	out := stopStampedPing(t, ping)
	t.Logf("%s: flannelu took over %v after flanneld exited; %s", m.backend, tookOver.Round(time.Millisecond), out)
	if tookOver > takeOverBound {
		t.Errorf("flannelu took over %v after flanneld exited, want at most %v:%s", tookOver, takeOverBound, testbed.Tail(fu.Log, 20))
	}
	m.checkOutage(t, out)
	if err := testbed.Eventually(eventDeadline, m.subnetKept); err != nil {
		t.Error(err)
	}
}

// rollback stops flannelu (SIGTERM, no successor) and starts flanneld bin
// with the same flags. vxlan and host-gw lose nothing (flanneld takes the
// kernel state as flannelu leaves it); udp's pods are cut off until
// flanneld's own proxy runs, and flanneld must carry their traffic once
// its backend runs: nothing flannelu left behind may stand in its way (a
// flannel0 left there turns flanneld's "flannel%d" into flannel1, whose
// route is refused). The outage is then flanneld's start-up: v0.28.9
// sets up its nftables and iptables rules first.
func (m *migration) rollback(t *testing.T, bin string) {
	ping := startStampedPing(t, m.c, fmt.Sprintf("ping-rollback-%d", m.steps))
	if err := m.daemon.Stop(); err != nil {
		t.Fatalf("flannelu on SIGTERM: %v%s", err, testbed.Tail(m.daemon.Log, 10))
	}
	started := time.Now()
	m.daemon = m.start(t, bin)
	out := stopStampedPing(t, ping)
	version := bin[strings.LastIndex(bin, "-")+1:]
	if out.lost == 0 {
		t.Logf("%s: rollback to flanneld %s: %s", m.backend, version, out)
		m.checkOutage(t, out)
		return
	}
	running, err := klogTime(m.daemon.Log, "Running backend.")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: rollback to flanneld %s: %s; traffic back %v after flanneld's start, %v after its backend ran (%v into its start)",
		m.backend, version, out, out.back.Sub(started).Round(time.Millisecond), out.back.Sub(running).Round(time.Millisecond),
		running.Sub(started).Round(time.Millisecond))
	if late := out.back.Sub(running); late > rollbackSlack {
		t.Errorf("flanneld's backend ran, and the pods' traffic came back only %v later, want at most %v", late, rollbackSlack)
	}
	if m.backend != "udp" {
		t.Errorf("%d pings lost", out.lost)
	}
	if err := testbed.Eventually(eventDeadline, m.subnetKept); err != nil {
		t.Error(err)
	}
}

// rollbackSlack bounds the time from flanneld's "Running backend." to its
// udp proxy carrying a ping: the proxy's start and a ping interval (the
// bound was 300 ms, met idle; a loaded machine takes seconds). Something
// flannelu left in the way (a flannel0) keeps the traffic away for good.
const rollbackSlack = 5 * time.Second

// takeOverBound bounds a daemon's take-over from another (flannelu's
// after flanneld's exit; flanneld's after flannelu's) and the pings'
// silence across it: a wall-clock bound, so a loose one that tells a wait
// that stopped looking from a busy machine. Idle it is 0.2-0.8 s (each
// test logs it); 2.1 s was seen at load 40-60.
const takeOverBound = 10 * time.Second

// checkOutage: vxlan and host-gw keep their kernel state and lose nothing,
// udp's device changes hands in at most a second.
func (m *migration) checkOutage(t *testing.T, out outage) {
	t.Helper()
	if m.backend != "udp" && out.lost > 0 {
		t.Errorf("%d pings lost", out.lost)
	}
	if out.gap > takeOverBound {
		t.Errorf("no ping answered for %v, want at most %v", out.gap, takeOverBound)
	}
}

// klogLine is a klog line's time (local, without the year) and message.
var klogLine = regexp.MustCompile(`(?m)^I(\d{4} \d{2}:\d{2}:\d{2}\.\d{6}) +\d+ \S+\] (.*)$`)

// klogTime is the time of flanneld's first log line with message msg.
func klogTime(log, msg string) (time.Time, error) {
	b, _ := os.ReadFile(log)
	for _, m := range klogLine.FindAllStringSubmatch(string(b), -1) {
		if m[2] != msg {
			continue
		}
		ts, err := time.ParseInLocation("0102 15:04:05.000000", m[1], time.Local)
		if err != nil {
			return time.Time{}, err
		}
		now := time.Now()
		return ts.AddDate(now.Year(), 0, 0), nil
	}
	return time.Time{}, fmt.Errorf("no %q in %s:%s", msg, log, testbed.Tail(log, 10))
}

// subnetKept: subnet.env names the subnet host 1 had from the start.
func (m *migration) subnetKept() error {
	env, err := subnet.ReadEnv(m.file)
	if err == nil && env.Subnet != m.env.Subnet {
		err = fmt.Errorf("subnet.env has %v, host 1 had %v", env.Subnet, m.env.Subnet)
	}
	return err
}

// backendRunning is flannelu's log line once its backend runs.
var backendRunning = regexp.MustCompile(`msg="backend running"`)

// nodeState is what a flannel daemon may change on host h: subnet.env
// (its bytes and time), the iptables rules, the devices, addresses,
// routes and permanent neighbours, and the flannel.1 fdb; counters,
// timers and IPv6 link-local addresses are left out.
func nodeState(t *testing.T, h *testbed.Host, file string) string {
	t.Helper()
	var b strings.Builder
	fi, err := os.Stat(file)
	env, _ := os.ReadFile(file)
	if err == nil {
		fmt.Fprintf(&b, "%s %v\n%s", file, fi.ModTime(), env)
	}
	for _, cmd := range [][]string{
		{"iptables-save"}, {"ip", "-d", "-o", "link", "show"}, {"ip", "-o", "addr", "show"},
		{"ip", "route", "show", "table", "all"}, {"ip", "neigh", "show", "nud", "permanent"},
		{"bridge", "fdb", "show", "dev", "flannel.1"},
	} {
		out, err := h.Run(cmd...)
		if err != nil && cmd[0] != "bridge" { // no flannel.1 but with vxlan
			t.Fatalf("%v: %v", cmd, err)
		}
		for _, line := range strings.Split(out, "\n") {
			// IPv6 link-local addresses come and go with duplicate
			// address detection: no daemon sets them.
			// ip -d names each link's peer namespace by asking the kernel
			// about every named namespace; one that another test removes
			// meanwhile makes it print this error instead.
			if !strings.HasPrefix(line, "#") && !strings.Contains(line, "fe80::") &&
				!strings.HasPrefix(line, "Error: Peer netns reference is invalid") {
				b.WriteString(countsAndTimers.ReplaceAllString(line, "") + "\n")
			}
		}
	}
	return b.String()
}

// countsAndTimers are iptables-save's packet and byte counts and a
// bridge's running timers.
var countsAndTimers = regexp.MustCompile(`\[\d+:\d+\]|\b\w+_timer +[\d.]+`)

// lineDiff lists the lines only one side has.
func lineDiff(a, b string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	ina, inb := in(a), in(b)
	var d []string
	for _, l := range strings.Split(a, "\n") {
		if !inb[l] {
			d = append(d, "- "+l)
		}
	}
	for _, l := range strings.Split(b, "\n") {
		if !ina[l] {
			d = append(d, "+ "+l)
		}
	}
	return strings.Join(d, "\n")
}

// stampedReply is ping -D's line for an echo reply.
var stampedReply = regexp.MustCompile(`(?m)^\[(\d+)\.(\d+)\] \d+ bytes from \S+ icmp_seq=(\d+) [^\n]*ms$`)

// stampedReplies maps each answered request to its reply's time.
func stampedReplies(b []byte) map[int]time.Time {
	replies := map[int]time.Time{}
	for _, m := range stampedReply.FindAllSubmatch(b, -1) {
		sec, _ := strconv.ParseInt(string(m[1]), 10, 64)
		frac := string(m[2])
		usec, _ := strconv.ParseInt((frac + "000000")[:6], 10, 64)
		seq, _ := strconv.Atoi(string(m[3]))
		replies[seq] = time.Unix(sec, usec*1000)
	}
	return replies
}

// startStampedPing is startPing with each reply's time (ping -D), 100
// requests a second.
func startStampedPing(t *testing.T, c *testbed.Cluster, name string) *testbed.Proc {
	t.Helper()
	return startPing(t, c, name, "-D", "-i", "0.01")
}

// outage is what a ping stream saw: the requests lost, and the longest
// time without a reply around them (from the reply before the first lost
// request to the reply after the last; 0 when none was lost).
type outage struct {
	sent, lost int
	gap        time.Duration
	back       time.Time // the first reply after the last lost request
}

func (o outage) String() string {
	return fmt.Sprintf("%d of %d pings lost, no reply for %v", o.lost, o.sent, o.gap.Round(time.Millisecond))
}

// stopStampedPing waits for 100 replies more than there are, stops the
// stream and reads the outage off it.
func stopStampedPing(t *testing.T, ping *testbed.Proc) outage {
	t.Helper()
	last := stopPing(t, ping, 100)
	b, _ := os.ReadFile(ping.Log)
	return outageOf(stampedReplies(b), last)
}

func outageOf(replies map[int]time.Time, last int) outage {
	o := outage{sent: last}
	first, final := 0, 0
	for seq := 1; seq <= last; seq++ {
		if _, ok := replies[seq]; !ok {
			o.lost++
			if first == 0 {
				first = seq
			}
			final = seq
		}
	}
	if o.lost == 0 {
		return o
	}
	before, after := time.Time{}, time.Time{}
	for seq := first - 1; seq >= 1 && before.IsZero(); seq-- {
		before = replies[seq]
	}
	for seq := final + 1; seq <= last && after.IsZero(); seq++ {
		after = replies[seq]
	}
	o.back = after
	if !before.IsZero() && !after.IsZero() {
		o.gap = after.Sub(before)
	}
	return o
}
