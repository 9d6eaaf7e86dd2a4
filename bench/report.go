package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

const (
	beginMarker = "<!-- bench:begin -->"
	endMarker   = "<!-- bench:end -->"
)

// row is one line of a table: a label and how to get a path's value.
type row struct {
	label  string
	value  func(pathResult) (float64, bool)
	format string
	ratio  bool // a ratio against vxlan makes sense
}

func metricRows(rates []int) []row {
	rows := []row{
		{"TCP, 1 stream (Gbit/s)", tcp1(func(r *iperfResult) float64 { return r.Gbps }), "%.2f", true},
		{"TCP, 4 streams (Gbit/s)", tcp4(func(r *iperfResult) float64 { return r.Gbps }), "%.2f", true},
	}
	for i, pps := range rates {
		name := "64 B UDP, " + rateName(pps) + " offered"
		rows = append(rows,
			row{name + ": delivered (kpps)", udpAt(i, func(u udpResult) float64 { return u.DeliveredPPS / 1e3 }), "%.1f", true},
			row{name + ": loss (%)", udpAt(i, func(u udpResult) float64 { return u.LossPct }), "%.1f", false})
	}
	return append(rows,
		row{"UDP round trip p50 (µs)", lat(func(l *latResult) float64 { return l.P50 }), "%.0f", true},
		row{"UDP round trip p99 (µs)", lat(func(l *latResult) float64 { return l.P99 }), "%.0f", true},
		row{"CPU per GB, TCP 1 stream (CPU s/GB, whole machine)", tcp1(func(r *iperfResult) float64 { return r.CPUPerGB }), "%.2f", true})
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

// table renders rows with one column per path and, when vxlan was
// measured, a "<path> / vxlan" column for each other path.
func table(rep *report, rows []row, ratios bool) string {
	var b strings.Builder
	var base *pathResult
	var others []pathResult
	for i, p := range rep.Paths {
		if p.Path == "vxlan" {
			base = &rep.Paths[i]
		} else {
			others = append(others, p)
		}
	}
	if !ratios {
		base = nil
	}
	b.WriteString("| |")
	for _, p := range rep.Paths {
		fmt.Fprintf(&b, " %s |", p.Path)
	}
	if base != nil {
		for _, p := range others {
			fmt.Fprintf(&b, " %s / vxlan |", p.Path)
		}
	}
	b.WriteString("\n|---|" + strings.Repeat("--:|", len(rep.Paths)))
	if base != nil {
		b.WriteString(strings.Repeat("--:|", len(others)))
	}
	b.WriteString("\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s |", r.label)
		for _, p := range rep.Paths {
			b.WriteString(" " + cell(r, p) + " |")
		}
		if base != nil {
			for _, p := range others {
				b.WriteString(" " + ratioCell(r, p, *base) + " |")
			}
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

func ratioCell(r row, p, base pathResult) string {
	v, ok1 := r.value(p)
	b, ok2 := r.value(base)
	if !r.ratio || !ok1 || !ok2 || b == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f×", v/b)
}

// updateSection replaces the marked section of doc, or appends it.
func updateSection(doc, section string) string {
	i := strings.Index(doc, beginMarker)
	j := strings.Index(doc, endMarker)
	if i >= 0 && j > i {
		return doc[:i] + section + doc[j+len(endMarker):]
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
	return os.WriteFile(cfg.write, []byte(updateSection(string(old), markdown(rep))), 0o644)
}
