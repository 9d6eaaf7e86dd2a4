//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flannelu/flannelu/testbed"
)

func TestMain(m *testing.M) {
	// The test binary doubles as the traffic helper run inside pods.
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helperMain(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// TestSmoke runs the harness in -quick mode on flannelu's udp path,
// flanneld's and both floors, end to end (about 40 s as root), and checks
// the table and JSON it writes.
func TestSmoke(t *testing.T) {
	testbed.RequireRoot(t)
	if testing.Short() {
		t.Skip("-short: the end-to-end harness smoke test takes ~40 s")
	}
	dir := t.TempDir()
	bin := flanneluForTest(t, dir)
	md := filepath.Join(dir, "BENCHMARKS.md")
	if err := os.WriteFile(md, []byte("# Benchmarks\n\n## Micro\nhand-written\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	paths := []string{"udp", flanneldPath, floorPath, floorPollPath}
	cfg, err := parseFlags([]string{"-flannelu", bin, "-flanneld", flanneldForTest(t), "-quick",
		"-paths", strings.Join(paths, ","), "-name", uniqueName("smoke"), "-write", md, "-json", filepath.Join(dir, "results.json")})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range rep.Paths {
		if p.TCP1 == nil || p.TCP1.Gbps <= 0 || p.TCP4 == nil || p.TCP4.Gbps <= 0 {
			t.Errorf("%s: no TCP throughput: %+v", p.Path, p)
		}
		if len(p.UDP) != 2 || p.UDP[0].Received == 0 || p.Latency == nil || p.Latency.P50 <= 0 {
			t.Errorf("%s: no UDP delivery or latency: %+v", p.Path, p)
		}
		// The round trips are a real measurement: all of them done, at one
		// packet in flight none lost (on the floors: nothing but the
		// forwarder can lose one).
		if l := p.Latency; isFloor(p.Path) && (l == nil || l.RoundTrips != cfg.roundTrips || l.Lost != 0 || l.P99 < l.P50) {
			t.Errorf("%s latency: %+v, want %d round trips, none lost", p.Path, l, cfg.roundTrips)
		}
	}
	checkFiles(t, md, filepath.Join(dir, "results.json"), paths...)
	if b, _ := os.ReadFile(md); !strings.Contains(string(b), "| udp / flanneld-udp |") {
		t.Errorf("BENCHMARKS.md has no ratio columns against flanneld-udp:\n%s", b)
	}
}

// flanneluForTest builds flannelu into dir and returns its path.
func flanneluForTest(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "flannelu")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/flannelu/flannelu/cmd/flannelu").CombinedOutput(); err != nil {
		t.Fatalf("build flannelu: %v\n%s", err, out)
	}
	return bin
}

// flanneldForTest builds flanneld v0.20.2 where make flanneld puts it,
// unless it is there already (make test builds it first), and returns
// its path.
func flanneldForTest(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(root, "scripts", "flanneld.sh"))
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/flanneld.sh: %v\n%s", err, out)
	}
	return filepath.Join(root, flanneldBin)
}

// setUp builds path's testbed for a test (root, not -short) with the
// harness's flags args added to -quick, and tears it down when the test
// ends.
func setUp(t *testing.T, path string, args ...string) *setup {
	t.Helper()
	testbed.RequireRoot(t)
	if testing.Short() {
		t.Skip("-short: builds a namespace testbed")
	}
	cfg, err := parseFlags(append([]string{"-quick", "-paths", path, "-name", uniqueName("t")}, args...))
	if err != nil {
		t.Fatal(err)
	}
	s, err := setupPath(cfg, path, t.TempDir())
	if s.tb != nil {
		t.Cleanup(func() { release(s.tb) })
	}
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// containsAll fails t for each of wants that text lacks.
func containsAll(t *testing.T, what, text string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(text, want) {
			t.Errorf("%s lacks %q:\n%s", what, want, text)
		}
	}
}

// uniqueName is a testbed name for this test process: two checkouts
// running the bench tests at once (a shared CI machine) never sweep each
// other's namespaces.
func uniqueName(prefix string) string {
	return fmt.Sprintf("%s%d", prefix, os.Getpid())
}

func checkFiles(t *testing.T, md, js string, paths ...string) {
	b, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, want := range []string{"hand-written", beginMarker, endMarker, "| TCP, 1 stream (Gbit/s) |", "Load average at start",
		"| | " + strings.Join(paths, " | ") + " |"} {
		if !strings.Contains(doc, want) {
			t.Errorf("BENCHMARKS.md lacks %q:\n%s", want, doc)
		}
	}
	var rep report
	if b, err = os.ReadFile(js); err == nil {
		err = json.Unmarshal(b, &rep)
	}
	var got []string
	for _, p := range rep.Paths {
		got = append(got, p.Path)
	}
	if err != nil || !slices.Equal(got, paths) {
		t.Errorf("results.json: %v, paths %v, want %v", err, got, paths)
	}
}

func TestUpdateSection(t *testing.T) {
	section := beginMarker + "\nnew\n" + endMarker
	markdownish := section + "\n" // as markdown() ends it
	doc := "# B\n\n" + beginMarker + "\nold\n" + endMarker + "\n\n## Micro\nkeep\n"
	got := updateSection(doc, section, false)
	if want := "# B\n\n" + section + "\n\n## Micro\nkeep\n"; got != want {
		t.Errorf("replace:\n%q\nwant\n%q", got, want)
	}
	md := "# B\n\n" + beginMarker + "\nold\n" + endMarker + "\n\n## Micro\nkeep\n"
	for range 2 {
		md = updateSection(md, markdownish, false)
	}
	if want := "# B\n\n" + markdownish + "\n## Micro\nkeep\n"; md != want {
		t.Errorf("re-run grows the document:\n%q\nwant\n%q", md, want)
	}
	if got := updateSection("# B\nkeep\n", section, false); got != "# B\nkeep\n\n"+section+"\n" {
		t.Errorf("append: %q", got)
	}
	if got := updateSection("", section, false); !strings.HasPrefix(got, "# flannelu benchmarks\n\n"+beginMarker) {
		t.Errorf("new file: %q", got)
	}
	// A pinned run has its own section: it leaves the shared one alone
	// and replaces only its own on the next run.
	pinned := pinnedBeginMarker + "\np1\n" + pinnedEndMarker + "\n"
	both := updateSection(got, pinned, true)
	if !strings.Contains(both, section) || !strings.Contains(both, pinned) {
		t.Errorf("pinned section next to the shared one: %q", both)
	}
	again := updateSection(both, pinnedBeginMarker+"\np2\n"+pinnedEndMarker+"\n", true)
	if strings.Contains(again, "p1") || !strings.Contains(again, "p2") || !strings.Contains(again, section) {
		t.Errorf("re-run of the pinned section: %q", again)
	}
}

func TestTableRatios(t *testing.T) {
	rep := &report{Settings: settings{Rates: []int{100000}}, Paths: []pathResult{
		{Path: "udp", TCP1: &iperfResult{Gbps: 2}},
		{Path: "vxlan", TCP1: &iperfResult{Gbps: 8}},
		{Path: "host-gw", Error: "boom"},
	}}
	tab := table(rep, metricRows(rep.Settings.Rates), true)
	for _, want := range []string{"| udp / vxlan | host-gw / vxlan |", "| TCP, 1 stream (Gbit/s) | 2.00 | 8.00 | error | 0.25× |  |"} {
		if !strings.Contains(tab, want) {
			t.Errorf("table lacks %q:\n%s", want, tab)
		}
	}
}

// TestTableFlanneldRatios: the columns against flanneld's udp backend
// divide loss too (and show nothing for 0/0); those against vxlan do not.
func TestTableFlanneldRatios(t *testing.T) {
	rep := &report{Settings: settings{Rates: []int{100000, 0}}, Paths: []pathResult{
		{Path: "udp", TCP1: &iperfResult{Gbps: 3}, UDP: []udpResult{{LossPct: 0}, {LossPct: 4}}, Latency: &latResult{P50: 30}},
		{Path: flanneldPath, TCP1: &iperfResult{Gbps: 0.3}, UDP: []udpResult{{LossPct: 0}, {LossPct: 80}}, Latency: &latResult{P50: 20}},
		{Path: "vxlan", TCP1: &iperfResult{Gbps: 30}, UDP: []udpResult{{LossPct: 0}, {LossPct: 0}}, Latency: &latResult{P50: 10}},
	}}
	containsAll(t, "table", table(rep, metricRows(rep.Settings.Rates), true),
		"| | udp | flanneld-udp | vxlan | udp / vxlan | flanneld-udp / vxlan | udp / flanneld-udp |",
		"| TCP, 1 stream (Gbit/s) | 3.00 | 0.30 | 30.00 | 0.10× | 0.01× | 10.00× |",
		"| 64 B UDP, 100k pps offered: loss (%) | 0.0 | 0.0 | 0.0 |  |  |  |",
		"| 64 B UDP, max offered: loss (%) | 4.0 | 80.0 | 0.0 |  |  | 0.05× |",
		"| UDP round trip p50 (µs) | 30 | 20 | 10 | 3.00× | 2.00× | 1.50× |")
}

func TestParseRates(t *testing.T) {
	if r, err := parseRates("100000, 1000000pps,0"); err != nil || len(r) != 3 || r[1] != 1000000 || r[2] != 0 {
		t.Errorf("parseRates: %v %v", r, err)
	}
	if _, err := parseRates("fast"); err == nil {
		t.Error("parseRates accepted junk")
	}
}

func TestTableManualRatios(t *testing.T) {
	rep := &report{Settings: settings{Rates: []int{0}}, Paths: []pathResult{
		{Path: "udp", TCP1: &iperfResult{Gbps: 2}},
		{Path: "vxlan", TCP1: &iperfResult{Gbps: 9}},
		{Path: "host-gw", TCP1: &iperfResult{Gbps: 12}},
		{Path: "vxlan-manual", TCP1: &iperfResult{Gbps: 10}},
		{Path: "host-gw-manual", TCP1: &iperfResult{Gbps: 12}},
	}}
	tab := table(rep, metricRows(rep.Settings.Rates), true)
	for _, want := range []string{
		"| | udp | vxlan | host-gw | vxlan-manual | host-gw-manual | udp / vxlan | host-gw / vxlan | vxlan / vxlan-manual | host-gw / host-gw-manual |\n|---|" + strings.Repeat("--:|", 9) + "\n",
		"| TCP, 1 stream (Gbit/s) | 2.00 | 9.00 | 12.00 | 10.00 | 12.00 | 0.22× | 1.33× | 0.90× | 1.00× |",
		"| 64 B UDP, max offered: loss (%) | — | — | — | — | — |  |  |  |  |",
	} {
		if !strings.Contains(tab, want) {
			t.Errorf("table lacks %q:\n%s", want, tab)
		}
	}
	if raw := table(rep, nil, false); strings.Contains(raw, " / ") {
		t.Errorf("raw table has ratio columns:\n%s", raw)
	}
}

func TestRatioColumns(t *testing.T) {
	paths := func(names ...string) []pathResult {
		var ps []pathResult
		for _, n := range names {
			ps = append(ps, pathResult{Path: n})
		}
		return ps
	}
	for _, tc := range []struct {
		paths []string
		want  []ratio
	}{
		{[]string{"udp", "vxlan", "host-gw"}, []ratio{{0, 1, false}, {2, 1, false}}},
		{[]string{"vxlan-manual", "host-gw-manual"}, nil},               // no flannelu counterpart
		{[]string{"host-gw", "host-gw-manual"}, []ratio{{0, 1, false}}}, // no vxlan
		{[]string{"vxlan", "vxlan-manual"}, []ratio{{0, 1, false}}},     // a manual path is no "/ vxlan" column
		{[]string{"udp", "vxlan", "host-gw", "vxlan-manual", "host-gw-manual"}, []ratio{{0, 1, false}, {2, 1, false}, {1, 3, false}, {2, 4, false}}},
		// the floor is divided by vxlan like flannelu's paths, and has no counterpart
		{[]string{"udp", "vxlan", "vxlan-manual", "udp-floor"}, []ratio{{0, 1, false}, {3, 1, false}, {1, 2, false}}},
		{[]string{"udp-floor", "vxlan-manual"}, nil},
		// flannelu's udp path is divided by flanneld's too, loss included;
		// flanneld's is divided by vxlan like the others
		{[]string{"udp", "flanneld-udp", "vxlan", "udp-floor", "udp-floor-poll"},
			[]ratio{{0, 2, false}, {1, 2, false}, {3, 2, false}, {4, 2, false}, {0, 1, true}}},
		{[]string{"flanneld-udp", "host-gw", "udp-floor"}, nil},
		// Kubernetes mode is divided by etcd mode's udp path, loss
		// included, and not by vxlan
		{[]string{"udp", "udp-kube", "flanneld-udp", "vxlan"},
			[]ratio{{0, 3, false}, {2, 3, false}, {0, 2, true}, {1, 0, true}}},
		{[]string{"udp-kube", "vxlan"}, nil},
	} {
		if got := ratioColumns(paths(tc.paths...)); !slices.Equal(got, tc.want) {
			t.Errorf("ratioColumns(%v) = %v, want %v", tc.paths, got, tc.want)
		}
	}
}

func TestManualCommands(t *testing.T) {
	if b, ok := manualBase("host-gw-manual"); !ok || b != "host-gw" {
		t.Errorf("manualBase(host-gw-manual) = %q %t", b, ok)
	}
	for _, p := range []string{"vxlan", "udp-manual", "-manual"} {
		if _, ok := manualBase(p); ok {
			t.Errorf("manualBase(%q) is a manual path", p)
		}
	}
	if manualMTU("vxlan") != 1450 || manualMTU("host-gw") != 1500 {
		t.Errorf("MTUs %d %d", manualMTU("vxlan"), manualMTU("host-gw"))
	}
	join := func(cmds [][]string) string {
		var lines []string
		for _, c := range cmds {
			lines = append(lines, strings.Join(c, " "))
		}
		return strings.Join(lines, "\n")
	}
	h1, h2 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	if got, want := join(vxlanDevice(h1, manualSubnet(1))), `ip link add flannel.1 type vxlan id 1 local 192.0.2.1 dev eth0 dstport 8472 nolearning
ip link set flannel.1 mtu 1450 up
ip addr add 198.18.1.0/32 dev flannel.1`; got != want {
		t.Errorf("vxlan device:\n%s\nwant\n%s", got, want)
	}
	mac := "c6:d2:32:6f:8f:44"
	if got, want := join(peerCommands("vxlan", h2, manualSubnet(2), mac)), `ip neigh add 198.18.2.0 lladdr c6:d2:32:6f:8f:44 dev flannel.1 nud permanent
bridge fdb append c6:d2:32:6f:8f:44 dev flannel.1 dst 192.0.2.2 self permanent
ip route add 198.18.2.0/24 via 198.18.2.0 dev flannel.1 onlink`; got != want {
		t.Errorf("vxlan peer:\n%s\nwant\n%s", got, want)
	}
	if got, want := join(peerCommands("host-gw", h1, manualSubnet(1), "")), "ip route add 198.18.1.0/24 via 192.0.2.1 dev eth0"; got != want {
		t.Errorf("host-gw peer: %q, want %q", got, want)
	}
}

func TestLinkMAC(t *testing.T) {
	out := `[{"ifindex":5,"ifname":"flannel.1","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1450,"link_type":"ether","address":"c6:d2:32:6f:8f:44","broadcast":"ff:ff:ff:ff:ff:ff"}]`
	if mac, err := linkMAC(out); err != nil || mac != "c6:d2:32:6f:8f:44" {
		t.Errorf("linkMAC = %q, %v", mac, err)
	}
	for _, bad := range []string{"", "[]", `[{"address":""}]`, `[{"address":"00:11"}]`, `[{"address":"a"},{"address":"b"}]`} {
		if mac, err := linkMAC(bad); err == nil {
			t.Errorf("linkMAC(%q) = %q, want an error", bad, mac)
		}
	}
}

func TestCheckPaths(t *testing.T) {
	cfg := &config{flannelu: "/nonexistent/flannelu", paths: []string{"vxlan-manual", "host-gw-manual", floorPath, floorPollPath},
		iperfTime: time.Second, udpTime: time.Second, roundTrips: 1, rounds: 1, measure: allMeasures}
	if err := cfg.check(); err != nil {
		t.Errorf("hand-made paths need no flannelu binary: %v", err)
	}
	cfg.paths = []string{"vxlan"}
	if err := cfg.check(); err == nil {
		t.Error("vxlan without a flannelu binary passed the check")
	}
	cfg.paths = []string{flanneldPath}
	cfg.flanneld = "/nonexistent/flanneld"
	if err := cfg.check(); err == nil || !strings.Contains(err.Error(), "make flanneld") {
		t.Errorf("flanneld-udp without a flanneld binary: %v", err)
	}
	cfg.flanneld = os.Args[0] // any file that exists
	if err := cfg.check(); err != nil {
		t.Errorf("flanneld-udp needs no flannelu binary: %v", err)
	}
	cfg.paths = []string{"udp-manual"}
	if err := cfg.check(); err == nil || !strings.Contains(err.Error(), "host-gw-manual, "+floorPath) {
		t.Errorf("unknown path: %v", err)
	}
	cfg.paths = []string{floorPath}
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"-measure", "tcp,jitter"}, `unknown measurement "jitter"`},
		{[]string{"-measure", "tcp,udp", "-perf"}, "-measure must include latency"},
		{[]string{"-rounds", "3", "-write", "B.md"}, "only without -write"},
		{[]string{"-rounds", "0"}, "from 1 to 50"},
	} {
		if _, err := parseFlags(append([]string{"-paths", floorPath}, bad.args...)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%v: %v, want an error with %q", bad.args, err, bad.want)
		}
	}
	if c, err := parseFlags([]string{"-paths", floorPath, "-measure", "latency", "-perf", "-rounds", "3"}); err != nil ||
		c.measures("tcp") || !c.measures("latency") || c.rounds != 3 || !c.perf {
		t.Errorf("-measure latency -perf -rounds 3: %+v, %v", c, err)
	}
}
