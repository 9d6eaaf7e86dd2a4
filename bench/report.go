//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The markers around the harness's section of BENCHMARKS.md; a run with
// -pin has a section of its own, so that both layouts stay side by side.
const (
	beginMarker       = "<!-- bench:begin -->"
	endMarker         = "<!-- bench:end -->"
	pinnedBeginMarker = "<!-- bench:pinned:begin -->"
	pinnedEndMarker   = "<!-- bench:pinned:end -->"
)

func markers(pinned bool) (begin, end string) {
	if pinned {
		return pinnedBeginMarker, pinnedEndMarker
	}
	return beginMarker, endMarker
}

// row is one line of a table: a label and how to get a path's value.
type row struct {
	label  string
	value  func(pathResult) (float64, bool)
	format string
	ratio  bool // a ratio between paths makes sense
	loss   bool // a loss row: a ratio only in the columns that divide loss
}

func metricRows(rates []int) []row {
	rows := []row{
		{"TCP, 1 stream (Gbit/s)", tcp1(func(r *iperfResult) float64 { return r.Gbps }), "%.2f", true, false},
		{"TCP, 4 streams (Gbit/s)", tcp4(func(r *iperfResult) float64 { return r.Gbps }), "%.2f", true, false},
	}
	for i, pps := range rates {
		name := "64 B UDP, " + rateName(pps) + " offered"
		rows = append(rows,
			row{name + ": delivered (kpps)", udpAt(i, func(u udpResult) float64 { return u.DeliveredPPS / 1e3 }), "%.1f", true, false},
			row{name + ": loss (%)", udpAt(i, func(u udpResult) float64 { return u.LossPct }), "%.1f", false, true})
	}
	return append(rows,
		row{"UDP round trip p50 (µs)", lat(func(l *latResult) float64 { return l.P50 }), "%.0f", true, false},
		row{"UDP round trip p99 (µs)", lat(func(l *latResult) float64 { return l.P99 }), "%.0f", true, false},
		row{"CPU per GB, TCP 1 stream (CPU s/GB, whole machine)", tcp1(func(r *iperfResult) float64 { return r.CPUPerGB }), "%.2f", true, false})
}

func tcp1(f func(*iperfResult) float64) func(pathResult) (float64, bool) {
	return func(p pathResult) (float64, bool) { return pick(p.TCP1, f) }
}

func tcp4(f func(*iperfResult) float64) func(pathResult) (float64, bool) {
	return func(p pathResult) (float64, bool) { return pick(p.TCP4, f) }
}

func lat(f func(*latResult) float64) func(pathResult) (float64, bool) {
	return func(p pathResult) (float64, bool) { return pick(p.Latency, f) }
}

func pick[T any](v *T, f func(*T) float64) (float64, bool) {
	if v == nil {
		return 0, false
	}
	return f(v), true
}

func udpAt(i int, f func(udpResult) float64) func(pathResult) (float64, bool) {
	return func(p pathResult) (float64, bool) {
		if i >= len(p.UDP) {
			return 0, false
		}
		return f(p.UDP[i]), true
	}
}

// ratio is a ratio column: path num's value over path den's (indexes
// into report.Paths). loss: it divides the loss rows too, which only the
// columns against a udp backend do, flanneld's or flannelu's with etcd
// (they lose at rates where the kernel paths lose nothing, so a ratio
// against those is 0/0).
type ratio struct {
	num, den int
	loss     bool
}

// ratioColumns picks the ratio columns: "<path> / vxlan" for each
// flannelu, flanneld and floor path other than vxlan and udp-kube, then
// "udp / flanneld-udp" (the floors against flanneld: -rounds), then
// "ipip / udp" (the same pipeline with the other encapsulation) and
// "udp-kube / udp" (the same data path with the other store: 1.00× but
// for noise), then "<backend> / <backend>-manual" (flannelu-programmed
// over hand-made) for each hand-made path whose flannelu counterpart was
// measured too.
func ratioColumns(paths []pathResult) []ratio {
	index := map[string]int{}
	for i, p := range paths {
		index[p.Path] = i
	}
	var cols []ratio
	if v, ok := index["vxlan"]; ok {
		for i, p := range paths {
			if _, manual := manualBase(p.Path); i != v && !manual && p.Path != kubePath {
				cols = append(cols, ratio{num: i, den: v})
			}
		}
	}
	if f, ok := index[flanneldPath]; ok {
		if u, ok := index["udp"]; ok {
			cols = append(cols, ratio{num: u, den: f, loss: true})
		}
	}
	for _, same := range []string{"ipip", kubePath} { // the udp pipeline with another wire or store
		if k, ok := index[same]; ok {
			if u, ok := index["udp"]; ok {
				cols = append(cols, ratio{num: k, den: u, loss: true})
			}
		}
	}
	for i, p := range paths {
		if base, manual := manualBase(p.Path); manual {
			if b, ok := index[base]; ok {
				cols = append(cols, ratio{num: b, den: i})
			}
		}
	}
	return cols
}

// table renders rows with one column per path and, if ratios, the
// ratioColumns.
func table(rep *report, rows []row, ratios bool) string {
	var b strings.Builder
	var cols []ratio
	if ratios {
		cols = ratioColumns(rep.Paths)
	}
	b.WriteString("| |")
	for _, p := range rep.Paths {
		fmt.Fprintf(&b, " %s |", p.Path)
	}
	for _, c := range cols {
		fmt.Fprintf(&b, " %s / %s |", rep.Paths[c.num].Path, rep.Paths[c.den].Path)
	}
	b.WriteString("\n|---|" + strings.Repeat("--:|", len(rep.Paths)+len(cols)) + "\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s |", r.label)
		for _, p := range rep.Paths {
			b.WriteString(" " + cell(r, p) + " |")
		}
		for _, c := range cols {
			b.WriteString(" " + ratioCell(r, c, rep.Paths[c.num], rep.Paths[c.den]) + " |")
		}
		b.WriteString("\n")
	}
	return b.String()
}

func cell(r row, p pathResult) string {
	v, ok := r.value(p)
	if !ok {
		if p.Error != "" {
			return "error"
		}
		return "—"
	}
	return fmt.Sprintf(r.format, v)
}

func ratioCell(r row, c ratio, p, base pathResult) string {
	v, ok1 := r.value(p)
	b, ok2 := r.value(base)
	if !(r.ratio || r.loss && c.loss) || !ok1 || !ok2 || b == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f×", v/b)
}

// updateSection replaces the marked section of doc, or appends it. What
// follows the end marker is kept as it is (section's own final newline is
// dropped there, so that re-running does not add a blank line each time).
func updateSection(doc, section string, pinned bool) string {
	begin, end := markers(pinned)
	return replaceBetween(doc, section, begin, end)
}

// replaceBetween replaces the part of doc from begin to end (the
// markers included, which section carries) by section, or appends it.
func replaceBetween(doc, section, begin, end string) string {
	i := strings.Index(doc, begin)
	j := strings.Index(doc, end)
	if i >= 0 && j > i {
		return doc[:i] + strings.TrimSuffix(section, "\n") + doc[j+len(end):]
	}
	if doc == "" {
		doc = "# flannelu benchmarks\n"
	}
	return strings.TrimRight(doc, "\n") + "\n\n" + section + "\n"
}

// writeOutputs writes results.json and the markdown section.
func writeOutputs(cfg *config, rep *report) error {
	if cfg.jsonOut != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(cfg.jsonOut), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(cfg.jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if cfg.write == "" {
		return nil
	}
	old, err := os.ReadFile(cfg.write)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	return os.WriteFile(cfg.write, []byte(updateSection(string(old), markdown(rep), cfg.pin)), 0o644)
}
