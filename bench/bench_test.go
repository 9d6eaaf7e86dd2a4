package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flannelu/flannelu/testbed"
)

func TestMain(m *testing.M) {
	// The test binary doubles as the traffic helper run inside pods.
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helperMain(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// TestSmokeUDP runs the harness in -quick mode on the udp path, end to
// end (about 10 s as root), and checks the table and JSON it writes.
func TestSmokeUDP(t *testing.T) {
	testbed.RequireRoot(t)
	if testing.Short() {
		t.Skip("-short: the end-to-end harness smoke test takes ~10 s")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "flannelu")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/flannelu/flannelu/cmd/flannelu").CombinedOutput(); err != nil {
		t.Fatalf("build flannelu: %v\n%s", err, out)
	}
	md := filepath.Join(dir, "BENCHMARKS.md")
	if err := os.WriteFile(md, []byte("# Benchmarks\n\n## Micro\nhand-written\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := parseFlags([]string{"-flannelu", bin, "-quick", "-paths", "udp", "-name", "benchsmoke",
		"-write", md, "-json", filepath.Join(dir, "results.json")})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := rep.Paths[0]
	if p.TCP1 == nil || p.TCP1.Gbps <= 0 || p.TCP4 == nil || p.TCP4.Gbps <= 0 {
		t.Fatalf("no TCP throughput: %+v", p)
	}
	if len(p.UDP) != 2 || p.UDP[0].Received == 0 || p.Latency == nil || p.Latency.P50 <= 0 {
		t.Fatalf("no UDP delivery or latency: %+v", p)
	}
	checkFiles(t, md, filepath.Join(dir, "results.json"))
}

func checkFiles(t *testing.T, md, js string) {
	b, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, want := range []string{"hand-written", beginMarker, endMarker, "| TCP, 1 stream (Gbit/s) |", "Load average at start"} {
		if !strings.Contains(doc, want) {
			t.Errorf("BENCHMARKS.md lacks %q:\n%s", want, doc)
		}
	}
	var rep report
	if b, err = os.ReadFile(js); err == nil {
		err = json.Unmarshal(b, &rep)
	}
	if err != nil || len(rep.Paths) != 1 || rep.Paths[0].Path != "udp" {
		t.Errorf("results.json: %v %+v", err, rep)
	}
}

func TestUpdateSection(t *testing.T) {
	section := beginMarker + "\nnew\n" + endMarker
	doc := "# B\n\n" + beginMarker + "\nold\n" + endMarker + "\n\n## Micro\nkeep\n"
	got := updateSection(doc, section)
	if want := "# B\n\n" + section + "\n\n## Micro\nkeep\n"; got != want {
		t.Errorf("replace:\n%q\nwant\n%q", got, want)
	}
	if got := updateSection("# B\nkeep\n", section); got != "# B\nkeep\n\n"+section+"\n" {
		t.Errorf("append: %q", got)
	}
	if got := updateSection("", section); !strings.HasPrefix(got, "# flannelu benchmarks\n\n"+beginMarker) {
		t.Errorf("new file: %q", got)
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

func TestParseRates(t *testing.T) {
	if r, err := parseRates("100000, 1000000pps,0"); err != nil || len(r) != 3 || r[1] != 1000000 || r[2] != 0 {
		t.Errorf("parseRates: %v %v", r, err)
	}
	if _, err := parseRates("fast"); err == nil {
		t.Error("parseRates accepted junk")
	}
}
