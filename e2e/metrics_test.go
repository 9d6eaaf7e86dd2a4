package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/flannelu/flannelu/testbed"
)

// Families every flannelu exports, and those of the udp backend with
// --trace (the TUN's, the sockets' and the tracer's counters were once
// computed but never exported).
var (
	commonFamilies = []string{"flannelu_malformed_leases_total", "flannelu_iptables_resync_failures_total"}
	udpFamilies    = []string{
		"flannelu_forwarded_packets_total", "flannelu_forwarded_bytes_total", "flannelu_dropped_packets_total",
		"flannelu_tun_truncated_packets_total", "flannelu_udp_truncated_datagrams_total", "flannelu_trace_dropped_records_total",
		"flannelu_tun_tx_dropped_packets_total", "flannelu_udp_socket_dropped_datagrams_total",
	}
)

// checkMetrics scrapes n's /metrics: promtool (Prometheus's own checker)
// must accept it, every family in want must be there, and every family
// and label it shows must be in the README's table of metrics.
func checkMetrics(t *testing.T, n *testbed.Node, want ...string) {
	t.Helper()
	text, err := n.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found; make deps installs it (Debian's prometheus package)")
	}
	check := exec.Command(promtool, "check", "metrics")
	check.Stdin = strings.NewReader(text)
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s\n/metrics on %s:\n%s", err, out, n.Host.Name, text)
	}
	got := exportedLabels(text)
	for _, name := range want {
		if _, ok := got[name]; !ok {
			t.Errorf("/metrics on %s has no %s:\n%s", n.Host.Name, name, text)
		}
	}
	documented := readmeLabels(t)
	for name, labels := range got {
		doc, ok := documented[name]
		if !ok {
			t.Errorf("%s is exported but in no table of metrics (README.md, docs/*.md)", name)
		} else if !slices.Equal(labels, doc) {
			t.Errorf("%s has labels %v, the README says %v", name, labels, doc)
		}
	}
}

var (
	sampleLine  = regexp.MustCompile(`(?m)^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+$`)
	labelName   = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="`)
	readmeRow   = regexp.MustCompile("(?m)^\\| `(flannelu_[a-z0-9_]+)` \\|([^|]*)\\|")
	readmeLabel = regexp.MustCompile("`([a-z_]+)`")
)

// exportedLabels maps each family in an exposition to its sorted label
// names.
func exportedLabels(text string) map[string][]string {
	return labelsByFamily(sampleLine.FindAllStringSubmatch(text, -1), labelName)
}

// readmeLabels reads the tables of metrics of the README and of the
// documents it links under docs/ (a family documented beside the feature
// that exports it): family -> sorted label names.
func readmeLabels(t *testing.T) map[string][]string {
	docs, err := filepath.Glob("../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	var rows [][]string
	for _, name := range append([]string{"../README.md"}, docs...) {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, readmeRow.FindAllStringSubmatch(string(b), -1)...)
	}
	return labelsByFamily(rows, readmeLabel)
}

// labelsByFamily maps each match's family (group 1) to the sorted names
// that label finds in its labels text (group 2).
func labelsByFamily(matches [][]string, label *regexp.Regexp) map[string][]string {
	families := map[string][]string{}
	for _, m := range matches {
		var labels []string
		for _, l := range label.FindAllStringSubmatch(m[2], -1) {
			labels = append(labels, l[1])
		}
		slices.Sort(labels)
		families[m[1]] = labels
	}
	return families
}

// checkMetrics runs after checkForeign: host 1's /metrics passes promtool,
// and flannelu_peer_errors_total counts the foreign lease it ignored (the
// count is taken before the warning checkForeign waited for is logged).
func (k *kernelCluster) checkMetrics(t *testing.T) {
	n := k.c.Nodes[1]
	checkMetrics(t, n, slices.Concat(commonFamilies, []string{"flannelu_peer_errors_total"})...)
	if v, err := n.Metric("flannelu_peer_errors_total"); err != nil || v < 1 {
		t.Fatalf("flannelu_peer_errors_total = %v (%v), want the ignored foreign lease counted", v, err)
	}
}
