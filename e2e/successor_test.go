package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flannelu/flannelu/backend/udp"
	"github.com/flannelu/flannelu/handover"
	"github.com/flannelu/flannelu/subnet"
	"github.com/flannelu/flannelu/testbed"
)

// TestHandOverOnlyToATrueSuccessor runs the wrong successors an operator
// or a test rig makes, on two udp hosts whose subnet files are one file in
// one directory (a rig that gives both namespace hosts /run/flannel):
// the other host's flannelu on a shared socket file, and behind a symlink
// to it; both on the default (abstract) socket; a flannelu of another
// network on the same host (its own --etcd-prefix and --subnet-file in the
// same directory); one with another --iface; then a garbage, a stalled and
// a half-finished hand-over client. Every flannelu keeps running, the pods
// answer 5 of 5 pings both ways after each, nothing is handed over but to
// the real successor at the end, and a restart after it still works while
// the half-finished client holds the descriptors it was lent.
func TestHandOverOnlyToATrueSuccessor(t *testing.T) {
	testbed.RequireRoot(t)
	t.Parallel()
	c := newCluster(t, "e2e-succ", 2, udpConfig)
	s := &successors{c: c, dir: filepath.Join(c.Dir, "run-flannel"), procs: map[int]*testbed.Proc{},
		argv: map[int][]string{}, envs: map[int]subnet.Env{}}
	s.file = filepath.Join(s.dir, "subnet.env")
	shared := filepath.Join(s.dir, "flannelu.sock")

	// Host 2 connects to host 1's socket file: another network namespace.
	s.start(t, 1, "--handover-socket", shared)
	s.start(t, 2, "--handover-socket", shared)
	s.addPods(t)
	refused := s.count(1, handover.Refused)
	if refused == 0 || s.count(2, handover.NotTakingOver) == 0 {
		t.Errorf("host 2 on host 1's socket file: %d refusals logged on host 1, %d on host 2; want both", refused, s.count(2, handover.NotTakingOver))
	}
	s.check(t, "a socket file shared across network namespaces")

	// A symlink at host 2's socket path, to host 1's live socket: never
	// followed, and replaced by host 2's own socket.
	link := filepath.Join(s.dir, "host2.sock")
	if err := os.Symlink(shared, link); err != nil {
		t.Fatal(err)
	}
	s.restart(t, 2, "--handover-socket", link)
	if err := s.procs[2].WaitLog(regexp.MustCompile(`msg="`+handover.Listening+`"`), eventDeadline); err != nil {
		t.Fatal(err)
	}
	if n := s.count(1, handover.Refused); n != refused {
		t.Errorf("host 1 was contacted through the symlink: %d refusals, had %d", n, refused)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("host 2's socket path: %v %v, want its own socket in place of the symlink", fi, err)
	}
	s.check(t, "a symlink at the socket path")

	// The default socket: abstract, one per network namespace, so the two
	// hosts with one subnet file never meet.
	s.restart(t, 1, "--handover-timeout", "3s")
	s.restart(t, 2)
	for i := 1; i <= 2; i++ {
		if n := s.count(i, handover.NotTakingOver) + s.count(i, handover.Refused); n != 0 {
			t.Errorf("host %d logged %d refusals on the default socket", i, n)
		}
	}
	s.check(t, "one subnet file, the default socket")

	t.Run("another network on the same host", s.checkOtherNetwork)
	t.Run("another interface on the same host", s.checkOtherIface)
	t.Run("bad clients, then a successor and a restart", s.checkBadClients)
}

// successors is the test's two hosts and their flannelus.
type successors struct {
	c     *testbed.Cluster
	dir   string // the shared directory
	file  string // the shared subnet file
	procs map[int]*testbed.Proc
	argv  map[int][]string // the command lines of procs
	envs  map[int]subnet.Env
	seq   int
}

// args are host i's flags: the cluster's store, the shared subnet file,
// its health port.
func (s *successors) args(i int, extra ...string) []string {
	h := s.c.Hosts[i-1]
	return append([]string{flannelu, "--etcd-endpoints", s.c.EtcdEndpoints(), "--subnet-file", s.file,
		"--healthz-port", strconv.Itoa(testbed.HealthPort), "--healthz-ip", h.Addr.String()}, extra...)
}

// launch starts a flannelu on host i with args.
func (s *successors) launch(t *testing.T, i int, args []string) *testbed.Proc {
	t.Helper()
	s.seq++
	p, err := s.c.Start(s.c.Hosts[i-1].NS, fmt.Sprintf("flannelu-h%d-%d", i, s.seq), args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s:%s", p.Log, testbed.Tail(p.Log, 25))
		}
	})
	return p
}

// start runs host i's flannelu and waits until its backend runs; it
// reads the subnet it took.
func (s *successors) start(t *testing.T, i int, extra ...string) {
	t.Helper()
	argv := s.args(i, extra...)
	p := s.launch(t, i, argv)
	waitStarted(t, p)
	s.procs[i], s.argv[i] = p, argv
	env, err := subnet.ReadEnv(s.file)
	if err != nil {
		t.Fatal(err)
	}
	if old, ok := s.envs[i]; ok && old.Subnet != env.Subnet {
		t.Errorf("host %d took %v, had %v", i, env.Subnet, old.Subnet)
	}
	s.envs[i] = env
}

// restart stops host i's flannelu and starts it again with extra.
func (s *successors) restart(t *testing.T, i int, extra ...string) {
	t.Helper()
	if err := s.procs[i].Stop(); err != nil {
		t.Fatalf("host %d's flannelu on SIGTERM: %v", i, err)
	}
	s.start(t, i, extra...)
}

func (s *successors) addPods(t *testing.T) {
	t.Helper()
	for i := 1; i <= 2; i++ {
		sn := s.envs[i].Subnet
		if err := s.c.Hosts[i-1].AddPods(1, netip.PrefixFrom(sn.Masked().Addr().Next(), sn.Bits()), s.envs[i].MTU); err != nil {
			t.Fatal(err)
		}
	}
}

// count is how many lines with msg host i's current flannelu logged.
func (s *successors) count(i int, msg string) int {
	b, _ := os.ReadFile(s.procs[i].Log)
	return strings.Count(string(b), `msg="`+msg+`"`)
}

// check: both hosts' flannelus run, and their pods answer 5 of 5 pings
// both ways.
func (s *successors) check(t *testing.T, after string) {
	t.Helper()
	for i, p := range s.procs {
		if p.Exited() {
			t.Fatalf("after %s: host %d's flannelu exited:%s", after, i, testbed.Tail(p.Log, 10))
		}
	}
	a, b := s.c.Hosts[0].Pods[0], s.c.Hosts[1].Pods[0]
	waitPing(t, a, b.Addr)
	for _, d := range [][2]*testbed.Pod{{a, b}, {b, a}} {
		if out, err := testbed.Ping(d[0].NS, d[1].Addr.String(), 5); err != nil {
			t.Errorf("after %s: %v\n%s", after, err, out)
		}
	}
}

// checkOtherNetwork runs a second flannelu on host 1 for another network
// (flannel's multi-network pattern: its own --etcd-prefix and
// --subnet-file, in the same directory; vxlan VNI 2 on its own port,
// subnets above the first network's): it starts as if alone, the first
// one is never contacted, and both run.
func (s *successors) checkOtherNetwork(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const prefix = "/other/network"
	if _, err := s.c.Client.Put(ctx, prefix+"/config",
		`{"Network":"198.18.0.0/16","SubnetLen":24,"SubnetMin":"198.18.210.0","SubnetMax":"198.18.220.0","Backend":{"Type":"vxlan","VNI":2,"Port":8473}}`); err != nil {
		t.Fatal(err)
	}
	otherFile := filepath.Join(s.dir, "other.env")
	other := s.launch(t, 1, append(s.args(1), "--etcd-prefix", prefix, "--subnet-file", otherFile))
	waitStarted(t, other)
	if env, err := subnet.ReadEnv(otherFile); err != nil || env.Subnet.Addr().As4()[2] < 210 {
		t.Errorf("the other network's subnet.env: %+v %v", env, err)
	}
	if n := s.count(1, handover.Refused) + s.count(1, "a successor connected; forwarding on until it asks to leave"); n != 0 {
		t.Errorf("the first flannelu was contacted by the other network's (%d lines)", n)
	}
	s.check(t, "a flannelu of another network on host 1")
	if other.Exited() {
		t.Fatalf("the other network's flannelu exited:%s", testbed.Tail(other.Log, 10))
	}
	if err := other.Stop(); err != nil {
		t.Errorf("the other network's flannelu on SIGTERM: %v", err)
	}
}

// checkOtherIface runs a second flannelu on host 1 for the same network
// and subnet file with another --iface: it is refused, waits without
// touching the node (subnet file, rules, devices, routes, the lease in
// etcd), and stops cleanly on SIGTERM; the first one runs on untouched.
func (s *successors) checkOtherIface(t *testing.T) {
	h := s.c.Hosts[0]
	// A second underlay interface (a veth pair: this kernel may have no
	// dummy driver).
	for _, cmd := range [][]string{
		{"ip", "link", "add", "eth1", "type", "veth", "peer", "name", "eth1p"},
		{"ip", "addr", "add", "198.51.100.1/24", "dev", "eth1"},
		{"ip", "link", "set", "eth1", "up"}, {"ip", "link", "set", "eth1p", "up"},
	} {
		if out, err := h.Run(cmd...); err != nil {
			t.Fatalf("%v: %v %s", cmd, err, out)
		}
	}
	before, rev := nodeState(t, h, s.file), s.leaseRevision(t, 1)
	refused := s.count(1, handover.Refused)
	other := s.launch(t, 1, s.args(1, "--iface", "eth1"))
	if err := other.WaitLog(regexp.MustCompile(`msg="`+handover.NotTakingOver+`".*interface`), eventDeadline); err != nil {
		t.Fatal(err)
	}
	if err := testbed.Eventually(eventDeadline, func() error {
		if s.count(1, handover.Refused) == refused {
			return fmt.Errorf("no refusal on host 1's first flannelu")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	s.check(t, "a flannelu with another --iface")
	if after := nodeState(t, h, s.file); after != before {
		t.Errorf("the refused flannelu changed the node's network state:\n%s", lineDiff(before, after))
	}
	if r := s.leaseRevision(t, 1); r != rev {
		t.Errorf("host 1's lease was written while the refused flannelu waited (revision %d, was %d)", r, rev)
	}
	if other.Exited() {
		t.Fatalf("the refused flannelu exited:%s", testbed.Tail(other.Log, 10))
	}
	if err := other.Stop(); err != nil {
		t.Errorf("the refused flannelu on SIGTERM: %v%s", err, testbed.Tail(other.Log, 5))
	}
}

// leaseRevision is the etcd revision host i's lease key was last written at.
func (s *successors) leaseRevision(t *testing.T, i int) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := s.c.Client.Get(ctx, testbed.EtcdPrefix+"/subnets/"+strings.ReplaceAll(s.envs[i].Subnet.Masked().String(), "/", "-"))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("host %d's lease: %v %v", i, resp, err)
	}
	return resp.Kvs[0].ModRevision
}

// checkBadClients connects a garbage, a stalled and a half-finished
// client (which takes the descriptors and never says leave) to host 1's
// flannelu under a ping stream: nothing is lost, the last two are cut off
// (--handover-timeout 3s for the half-finished one); then a real
// successor takes over without a lost ping and, restarted, still works
// while the half-finished client holds what it was lent.
func (s *successors) checkBadClients(t *testing.T) {
	h := s.c.Hosts[0]
	ping := startStampedPing(t, s.c, "ping-bad-clients")
	refused, cutOff := s.count(1, handover.Refused), s.count(1, handover.CutOff)
	garbage := s.client(t, "handover-garbage")
	if err := garbage.WaitLog(regexp.MustCompile(`(?m)^closed$`), eventDeadline); err != nil {
		t.Fatal(err)
	}
	stalled := s.client(t, "handover-stall")
	half := s.client(t, "handover-half")
	if err := half.WaitLog(regexp.MustCompile(`(?m)^holding 2 descriptors$`), eventDeadline); err != nil {
		t.Fatal(err)
	}
	if err := stalled.WaitLog(regexp.MustCompile(`(?m)^cut off$`), eventDeadline); err != nil {
		t.Fatal(err)
	}
	if err := testbed.Eventually(eventDeadline, func() error {
		if s.count(1, handover.CutOff) == cutOff || s.count(1, handover.Refused) < refused+2 {
			return fmt.Errorf("host 1 logged %d cut-offs and %d refusals since the clients came",
				s.count(1, handover.CutOff)-cutOff, s.count(1, handover.Refused)-refused)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// A real successor, while the half-finished client holds its copies.
	old := s.procs[1]
	next := s.launch(t, 1, s.argv[1])
	if err := waitLeft(old); err != nil {
		t.Fatal(err)
	}
	if err := next.WaitLog(regexp.MustCompile(`msg="`+handover.Listening+`"`), eventDeadline); err != nil {
		t.Fatal(err)
	}
	s.procs[1] = next
	out := stopStampedPing(t, ping)
	t.Logf("bad clients, then a hand-over to the real successor: %s", out)
	if out.lost > 0 {
		t.Errorf("%d pings lost", out.lost)
	}
	s.check(t, "bad clients and a hand-over")
	s.restart(t, 1, "--handover-timeout", "3s")
	s.check(t, "a restart while the half-finished client holds its descriptors")
	if err := checkOneDevice(h); err != nil {
		t.Error(err)
	}
	if half.Exited() {
		t.Errorf("the half-finished client exited:%s", testbed.Tail(half.Log, 5))
	}
}

// client runs a bad hand-over client (helper mode) on host 1 against its
// default socket, with host 1's identity for the half-finished one.
func (s *successors) client(t *testing.T, mode string) *testbed.Proc {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := subnet.ParseConfig([]byte(udpConfig))
	if err != nil {
		t.Fatal(err)
	}
	id, err := json.Marshal(handover.Identity{Store: handover.EtcdStore(s.c.EtcdEndpoints(), testbed.EtcdPrefix),
		Network: handover.NetworkOf(cfg), Backend: "udp", Iface: "eth0", PublicIP: s.c.Hosts[0].Addr.String(),
		Device: handover.UDPDevice(0, true)})
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.c.Start(s.c.Hosts[0].NS, mode, "env", "FLANNELU_E2E_HELPER="+mode, "FLANNELU_E2E_IDENTITY="+string(id), self, s.file)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop() }) //nolint:errcheck // killed at the end
	return p
}

// wroteSubnetFile is flannelu's log line once subnet.env is written
// (beside the backend's start, after the rules).
var wroteSubnetFile = regexp.MustCompile(`msg="wrote subnet file"`)

// waitStarted waits until a flannelu's backend runs and its subnet.env
// is written.
func waitStarted(t *testing.T, p *testbed.Proc) {
	t.Helper()
	for _, re := range []*regexp.Regexp{backendRunning, wroteSubnetFile} {
		if err := p.WaitLog(re, eventDeadline); err != nil {
			t.Fatal(err)
		}
	}
}

// heldFiles keeps the half-finished client's descriptors reachable: an
// os.File the collector finds unreachable is closed.
var heldFiles *udp.Inherited

// handOverClient is the helper process of a bad client, on the default
// socket of subnetFile: garbage sends a datagram that is no message and
// waits to be closed; stall connects and says nothing; half takes the
// state and descriptors as a successor would (handover.Find, with the
// identity in FLANNELU_E2E_IDENTITY), then holds them until killed.
func handOverClient(mode, subnetFile string) int {
	addr, _ := handover.AddrFor("", subnetFile)
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "helper:", err); return 1 }
	if mode == "handover-half" {
		var id handover.Identity
		if err := json.Unmarshal([]byte(os.Getenv("FLANNELU_E2E_IDENTITY")), &id); err != nil {
			return fail(err)
		}
		p, err := handover.Find(context.Background(), addr, id, 0, slog.New(slog.NewTextHandler(os.Stderr, nil)))
		if err != nil || p == nil {
			return fail(fmt.Errorf("no state: %v", err))
		}
		heldFiles = p.Inherit()
		fmt.Printf("holding %d descriptors\n", len(heldFiles.Files()))
		select {}
	}
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: addr.String(), Net: "unixpacket"})
	if err != nil {
		return fail(err)
	}
	if mode == "handover-garbage" {
		if _, err := c.Write([]byte("\x00\xff not a hand-over message")); err != nil {
			return fail(err)
		}
	}
	io.Copy(io.Discard, c) //nolint:errcheck // until the server closes it
	if mode == "handover-garbage" {
		fmt.Println("closed")
	} else {
		fmt.Println("cut off")
	}
	return 0
}
