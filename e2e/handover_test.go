package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannelu/flannelu/backend/udp"
	"github.com/flannelu/flannelu/testbed"
)

// TestUDPRestart stops host 1's flannelu with SIGTERM under a 100 pings/s
// stream and starts it again: flannel0 and its route go with the process,
// as flanneld's do (a flanneld started next must be able to create
// flannel0), the new one creates them again and keeps the subnet, and the
// pings lost are one run no longer than the gap between the old process's
// last forwarding and the new one's first explains.
func TestUDPRestart(t *testing.T) {
	testbed.RequireRoot(t)
	t.Parallel()
	c := newCluster(t, "e2e-udprestart", 2, udpConfig)
	startPair(t, c)
	old := c.Nodes[1]
	ping := startPing(t, c, "ping-restart", "-i", "0.01")
	if err := old.Stop(); err != nil {
		t.Fatalf("flannelu on host 1 did not stop cleanly on SIGTERM: %v%s", err, testbed.Tail(old.Proc.Log, 10))
	}
	stoppedAt := logTime(t, old.Proc.Log, udp.StoppedForwarding, 1)
	if err := checkNoDevice(c.Hosts[0]); err != nil {
		t.Errorf("after the stop: %v", err)
	}
	n := startNode(t, c, 1)
	// The log is appended to: the second "forwarding" line is the new process's.
	if err := n.Proc.WaitOutput(eventDeadline, "the new process forwarding", func(b []byte) bool {
		return strings.Count(string(b), "msg="+udp.Forwarding+" ") >= 2
	}); err != nil {
		t.Fatal(err)
	}
	startedAt := logTime(t, n.Proc.Log, udp.Forwarding, 2)
	last := stopPing(t, ping, 100)
	lost := lostSeqs(ping, last)
	gap := startedAt.Sub(stoppedAt)
	// A request is lost if it reached host 1 in the gap, or its reply did:
	// one interval either side.
	explained := int(gap/(10*time.Millisecond)) + 2
	t.Logf("restart: no forwarding for %v (log times), %d of %d pings lost: %v", gap, len(lost), last, lost)
	if len(lost) > explained {
		t.Errorf("%d pings lost, the %v gap explains at most %d", len(lost), gap, explained)
	}
	if len(lost) > 0 && lost[len(lost)-1]-lost[0] != len(lost)-1 {
		t.Errorf("lost pings are not one run (one gap): %v", lost)
	}
	if n.Env.Subnet != old.Env.Subnet {
		t.Errorf("restarted host 1 got subnet %v, had %v", n.Env.Subnet, old.Env.Subnet)
	}
	if err := checkOneDevice(c.Hosts[0]); err != nil {
		t.Errorf("after the restart: %v", err)
	}

	// Two workers: a multiqueue device, created as freshly.
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	startNode(t, c, 1, "--udp-workers", "2")
	waitPing(t, c.Hosts[0].Pods[0], c.Hosts[1].Pods[0].Addr)
	if err := checkOneDevice(c.Hosts[0]); err != nil {
		t.Errorf("after a restart with two workers: %v", err)
	}
}

// checkNoDevice: host h has no TUN device and no route for the network.
func checkNoDevice(h *testbed.Host) error {
	links, err := h.Run("ip", "-o", "link", "show", "type", "tun")
	if err != nil {
		return err
	}
	routes, err := h.Run("ip", "-o", "route", "show", "exact", "198.18.0.0/16")
	if err != nil {
		return err
	}
	if strings.TrimSpace(links+routes) != "" {
		return fmt.Errorf("want no TUN device and no route for 198.18.0.0/16; have:\n%s%s", links, routes)
	}
	return nil
}

// TestUDPHandOver starts a second flannelu on host 1 while one runs, on a
// dual-stack network, under a 100 pings/s stream over each family and an
// iperf3 TCP stream between the hosts' pods: the new one takes over and
// the old one exits 0, with no ping lost, the TCP stream going on, the
// same subnet on the same etcd lease (one key), one flannel0 with one
// route, and the very sockets (IPv4 and IPv6) the old one had.
func TestUDPHandOver(t *testing.T) {
	testbed.RequireRoot(t)
	t.Parallel()
	c := newClusterOf(t, testbed.Options{Name: "e2e-handover", Hosts: 2, IPv6: true}, dualStack.config("udp"))
	startPair(t, c)
	waitPing(t, c.Hosts[0].Pods[0], c.Hosts[1].Pods[0].Addr6)
	old := c.Nodes[1]
	keysBefore, leaseBefore := leaseKeys(t, c)
	socketsBefore := udpSockets(t, c.Hosts[0])
	iperf := startIperf(t, c)
	// -w: ping waits for each of the 2000 replies (until 2000 are in, or
	// 80 s), where it would give up on the last ones two round trips
	// after its last request: late replies on a loaded machine are not
	// lost ones (150 such were counted lost at load 50).
	ping := startPing(t, c, "ping-handover", "-i", "0.01", "-c", "2000", "-w", "80")
	ping6 := startPing(t, c, "ping6-handover", "-6", "-i", "0.01", "-c", "2000", "-w", "80")

	next, err := c.Start(c.Hosts[0].NS, "flannelu-host1-next", old.Args...)
	if err != nil {
		t.Fatal(err)
	}
	defer next.Stop() //nolint:errcheck // the bed stops it too
	if err := waitLeft(old.Proc); err != nil {
		t.Fatal(err)
	}
	if err := next.WaitLog(regexp.MustCompile(`msg="hand-over socket listening"`), eventDeadline); err != nil {
		t.Fatal(err)
	}
	// The TCP stream goes on through the new process: two more reports.
	reports := iperfReports(iperf)
	if err := iperf.WaitOutput(eventDeadline, "two iperf3 reports after the hand-over", func(b []byte) bool {
		return strings.Count(string(b), " sec ") >= reports+2
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := ping.Wait(eventDeadline); err != nil {
		t.Errorf("ping -c 2000 across the hand-over: %v%s", err, testbed.Tail(ping.Log, 3))
	}
	if lost := lostSeqs(ping, 2000); len(lost) > 0 {
		t.Errorf("%d of 2000 pings lost across the hand-over: %v", len(lost), lost)
	}
	if _, err := ping6.Wait(eventDeadline); err != nil {
		t.Errorf("ping -6 -c 2000 across the hand-over: %v%s", err, testbed.Tail(ping6.Log, 3))
	}
	if lost := lostSeqs(ping6, 2000); len(lost) > 0 {
		t.Errorf("%d of 2000 IPv6 pings lost across the hand-over: %v", len(lost), lost)
	}
	if after := udpSockets(t, c.Hosts[0]); after != socketsBefore {
		t.Errorf("UDP sockets on port 8285 before the hand-over:\n%s\nafter it:\n%s\nwant the same ones (address, inode)", socketsBefore, after)
	}
	iperf.Signal(syscall.SIGINT)
	iperf.Wait(eventDeadline)
	if b, _ := os.ReadFile(iperf.Log); strings.Contains(string(b), "reset") || strings.Contains(string(b), "error -") {
		t.Errorf("the TCP stream failed across the hand-over:%s", testbed.Tail(iperf.Log, 5))
	}
	keysAfter, leaseAfter := leaseKeys(t, c)
	if keysAfter != keysBefore || leaseAfter != leaseBefore {
		t.Errorf("leases in etcd: %s on etcd lease %x before the hand-over, %s on %x after", keysBefore, leaseBefore, keysAfter, leaseAfter)
	}
	if err := checkOneDevice(c.Hosts[0]); err != nil {
		t.Error(err)
	}
	if next.Exited() {
		t.Fatalf("the new flannelu exited:%s", testbed.Tail(next.Log, 10))
	}
	if b, _ := os.ReadFile(next.Log); !strings.Contains(string(b), "taking over from it") {
		t.Errorf("the new flannelu did not take over:%s", testbed.Tail(next.Log, 10))
	}
}

// startPair runs flannelu on both hosts with a pod each, and waits until
// the pods reach each other.
func startPair(t *testing.T, c *testbed.Cluster) {
	t.Helper()
	for i := 1; i <= 2; i++ {
		startNode(t, c, i)
		if err := c.Nodes[i].AddPods(1); err != nil {
			t.Fatal(err)
		}
	}
	waitPing(t, c.Hosts[0].Pods[0], c.Hosts[1].Pods[0].Addr)
}

// inodeRe is the socket inode in a line of ss -e.
var inodeRe = regexp.MustCompile(`\bino:(\d+)`)

// udpSockets lists the UDP sockets bound to flannel's port on h, one
// "address inode" line each, sorted.
func udpSockets(t *testing.T, h *testbed.Host) string {
	t.Helper()
	out, err := h.Run("ss", "-H", "-u", "-a", "-n", "-e", "sport", "=", ":8285")
	if err != nil {
		t.Fatal(err)
	}
	var socks []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.Contains(line, ":8285") {
			continue // a warning of ss's, such as "Failed to find cgroup2 mount"
		}
		f := strings.Fields(line)
		ino := inodeRe.FindStringSubmatch(line)
		if len(f) < 4 || ino == nil {
			t.Fatalf("ss line without a local address and inode: %q", line)
		}
		socks = append(socks, f[3]+" "+ino[1])
	}
	slices.Sort(socks)
	return strings.Join(socks, "\n")
}

// startPing starts a ping stream from host 1's pod to host 2's (over
// IPv6 when args has -6) and waits for 100 replies: the stream runs before
// whatever the test does next.
func startPing(t *testing.T, c *testbed.Cluster, name string, args ...string) *testbed.Proc {
	t.Helper()
	to := c.Hosts[1].Pods[0].Addr
	if slices.Contains(args, "-6") {
		to = c.Hosts[1].Pods[0].Addr6
	}
	args = append(append([]string{"ping", "-n"}, args...), to.String())
	ping, err := c.Start(c.Hosts[0].Pods[0].NS, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ping.Stop() }) //nolint:errcheck // it may have ended
	if err := waitAnswered(ping, 100); err != nil {
		t.Fatal(err)
	}
	return ping
}

// stopPing waits for more replies beyond the last one seen, stops the
// stream and returns the last request that must have been answered.
func stopPing(t *testing.T, ping *testbed.Proc, more int) int {
	t.Helper()
	b, _ := os.ReadFile(ping.Log)
	last := lastAnswered(b) + more
	if err := waitAnswered(ping, last); err != nil {
		t.Fatal(err)
	}
	ping.Signal(syscall.SIGINT)
	ping.Wait(eventDeadline)
	return last
}

// lostSeqs lists the requests 1..last a ping's output shows unanswered.
func lostSeqs(ping *testbed.Proc, last int) []int {
	b, _ := os.ReadFile(ping.Log)
	answered := testbed.PingReplies(b)
	var lost []int
	for seq := 1; seq <= last; seq++ {
		if !answered[seq] {
			lost = append(lost, seq)
		}
	}
	return lost
}

// startIperf runs an iperf3 TCP stream from host 1's pod to host 2's,
// reporting every half second until stopped, and waits for its first
// report.
func startIperf(t *testing.T, c *testbed.Cluster) *testbed.Proc {
	t.Helper()
	to := c.Hosts[1].Pods[0]
	srv, err := c.Start(to.NS, "iperf3-server", "iperf3", "-s", "-1", "-B", to.Addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop() }) //nolint:errcheck // it may have ended
	// The listening socket, seen without connecting: "-s -1" serves one client.
	if err := testbed.Eventually(eventDeadline, func() error {
		out, err := to.Run("ss", "-Hltn", "sport", "=", ":5201")
		if err == nil && !strings.Contains(out, "LISTEN") {
			err = errors.New("iperf3 server not listening yet")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	cl, err := c.Start(c.Hosts[0].Pods[0].NS, "iperf3-client", "iperf3", "-c", to.Addr.String(),
		"-t", "3600", "-i", "0.5", "--forceflush", "-f", "m")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Stop() }) //nolint:errcheck // it may have ended
	if err := cl.WaitOutput(eventDeadline, "a first iperf3 report", func(b []byte) bool {
		return strings.Contains(string(b), " sec ")
	}); err != nil {
		t.Fatal(err)
	}
	return cl
}

// iperfReports counts the interval reports so far.
func iperfReports(p *testbed.Proc) int {
	b, _ := os.ReadFile(p.Log)
	return strings.Count(string(b), " sec ")
}

// leaseKeys lists the lease keys in etcd and the etcd lease of host 1's.
func leaseKeys(t *testing.T, c *testbed.Cluster) (keys string, lease1 int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Client.Get(ctx, testbed.EtcdPrefix+"/subnets/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	own := strings.ReplaceAll(c.Nodes[1].Env.Subnet.Masked().String(), "/", "-")
	var names []string
	for _, kv := range resp.Kvs {
		names = append(names, string(kv.Key))
		if strings.HasSuffix(string(kv.Key), "/"+own) {
			lease1 = kv.Lease
		}
	}
	return strings.Join(names, " "), lease1
}

// checkOneDevice: host 1 has one flannel0, up, and one route for the
// network, through it.
func checkOneDevice(h *testbed.Host) error {
	links, err := h.Run("ip", "-o", "link", "show", "type", "tun")
	if err != nil {
		return err
	}
	if strings.Count(links, ": flannel0:") != 1 || strings.Count(links, "\n") != 1 || !strings.Contains(links, ",UP") {
		return fmt.Errorf("want one TUN device, flannel0, up; have:\n%s", links)
	}
	routes, err := h.Run("ip", "-o", "route", "show", "exact", "198.18.0.0/16")
	if err != nil {
		return err
	}
	if !regexp.MustCompile(`\A198\.18\.0\.0/16 dev flannel0 [^\n]*\n\z`).MatchString(routes) {
		return fmt.Errorf("want one route for 198.18.0.0/16, through flannel0; have:\n%s", routes)
	}
	return nil
}

var logTimeRe = regexp.MustCompile(`(?m)^time=(\S+) .*msg=(?:"([^"]*)"|(\S+))`)

// logTime is the time of the nth line (1-based) of a log with message msg.
func logTime(t *testing.T, log, msg string, nth int) time.Time {
	t.Helper()
	b, _ := os.ReadFile(log)
	seen := 0
	for _, m := range logTimeRe.FindAllStringSubmatch(string(b), -1) {
		if m[2]+m[3] != msg {
			continue
		}
		if seen++; seen == nth {
			ts, err := time.Parse(time.RFC3339Nano, m[1])
			if err != nil {
				t.Fatal(err)
			}
			return ts
		}
	}
	t.Fatalf("no line %d with msg=%q in %s:%s", nth, msg, log, testbed.Tail(log, 10))
	return time.Time{}
}

// With --after-handover=wait (the manifest's: a pod's exited container
// would be restarted) the process that handed over keeps running, serving
// only /healthz, until a signal; it then exits 0 and its successor goes on.
func TestHandOverWaitsForTheSignal(t *testing.T) {
	testbed.RequireRoot(t)
	t.Parallel()
	c := newCluster(t, "e2e-hwait", 1, ipv4.config("host-gw"))
	old := startNode(t, c, 1, "--after-handover=wait")
	next, err := c.Start(c.Hosts[0].NS, "flannelu-host1-next", old.Args...)
	if err != nil {
		t.Fatal(err)
	}
	defer next.Stop() //nolint:errcheck // the bed stops it too
	if err := old.Proc.WaitLog(regexp.MustCompile(`msg="handed over: serving /healthz only`), eventDeadline); err != nil {
		t.Fatal(err)
	}
	if err := next.WaitLog(regexp.MustCompile(`msg="hand-over socket listening"`), eventDeadline); err != nil {
		t.Fatal(err)
	}
	if old.Proc.Exited() {
		t.Fatalf("the old flannelu exited after handing over:%s", testbed.Tail(old.Proc.Log, 5))
	}
	// Both listen on the health port (SO_REUSEPORT); the old one still does.
	listeners, err := c.Hosts[0].Run("ss", "-Hltnp", "sport", "=", fmt.Sprintf(":%d", testbed.HealthPort))
	if err != nil || strings.Count(listeners, "flannelu") != 2 {
		t.Errorf("health port listeners while the old flannelu waits (want both processes): %v\n%s", err, listeners)
	}
	if err := old.Stop(); err != nil {
		t.Fatalf("the old flannelu on SIGTERM: %v%s", err, testbed.Tail(old.Proc.Log, 5))
	}
	if next.Exited() {
		t.Fatalf("the new flannelu exited:%s", testbed.Tail(next.Log, 10))
	}
}

// waitLeft waits until a flannelu that handed over has exited, with status 0.
func waitLeft(p *testbed.Proc) error {
	switch exited, err := p.Wait(eventDeadline); {
	case !exited:
		return fmt.Errorf("the first flannelu did not leave:%s", testbed.Tail(p.Log, 10))
	case err != nil:
		return fmt.Errorf("the first flannelu exited with %w:%s", err, testbed.Tail(p.Log, 10))
	}
	return nil
}
