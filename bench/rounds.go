//go:build linux

package main

import (
	"fmt"
	"slices"
	"strings"
)

// roundsMarkdown summarises a -rounds run: per path the median and range
// over the rounds of the round-trip percentiles, of the per-round ratios
// against flanneld's udp backend, kernel vxlan and standalone
// wireguard-go (those of them measured; paths measured
// back to back, so the ratio is steadier than either value), and with
// -perf of what the forwarders did per round trip; the same for TCP
// throughput when it was measured; then every round's p50 / p99 with the
// load average it started at.
func roundsMarkdown(rep *report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%d interleaved rounds (each round starts one path later), round trips per run: %d.\n\n",
		len(rep.Rounds), rep.Settings.RoundTrips)
	var dens []string
	for _, d := range []string{flanneldPath, "vxlan", wireguardGoPath} {
		if slices.Contains(pathNames(rep.Paths), d) {
			dens = append(dens, d)
		}
	}
	b.WriteString("| path | p50 µs | p99 µs |")
	for _, d := range dens {
		fmt.Fprintf(&b, " p50 / %s | p99 / %s |", d, d)
	}
	b.WriteString(" syscalls | context switches | CPU migrations | CPU µs | threads woken |\n")
	b.WriteString("|---|" + strings.Repeat("--:|", 7+2*len(dens)) + "\n")
	for i, p := range rep.Paths {
		fmt.Fprintf(&b, "| %s | %s | %s |", p.Path, spread(rep.Rounds, i, p50), spread(rep.Rounds, i, p99))
		for _, d := range dens {
			j := slices.Index(pathNames(rep.Paths), d)
			fmt.Fprintf(&b, " %s | %s |", ratioSpread(rep.Rounds, i, j, p50), ratioSpread(rep.Rounds, i, j, p99))
		}
		for _, f := range []func(pathResult) (float64, bool){fwd(func(s *forwarderStats) float64 { return s.Syscalls }),
			fwd(func(s *forwarderStats) float64 { return s.Switches }), fwd(func(s *forwarderStats) float64 { return s.Migrations }),
			fwd(func(s *forwarderStats) float64 { return s.CPUMicros }), fwd(func(s *forwarderStats) float64 { return float64(len(s.Threads)) })} {
			fmt.Fprintf(&b, " %s |", spread(rep.Rounds, i, f))
		}
		b.WriteString("\n")
	}
	b.WriteString("\nMedian (min-max) over the rounds; the ratios are per round. Forwarder columns (-perf): both hosts'\n" +
		"forwarding processes per round trip, from perf stat --per-thread; threads woken: those with at least\n" +
		"one context switch per 10 round trips.\n")
	b.WriteString(callsTable(rep))
	b.WriteString(tcpRoundsTable(rep, dens))
	b.WriteString("\n| round | load (1, 5, 15 min) |")
	for _, p := range rep.Paths {
		fmt.Fprintf(&b, " %s p50 / p99 |", p.Path)
	}
	b.WriteString("\n|---|---|" + strings.Repeat("--:|", len(rep.Paths)) + "\n")
	for r, round := range rep.Rounds {
		fmt.Fprintf(&b, "| %d | %s |", r+1, round.LoadAvg)
		for _, p := range round.Paths {
			if p.Latency == nil {
				b.WriteString(" — |")
				continue
			}
			fmt.Fprintf(&b, " %.0f / %.0f |", p.Latency.P50, p.Latency.P99)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func pathNames(ps []pathResult) []string {
	var names []string
	for _, p := range ps {
		names = append(names, p.Path)
	}
	return names
}

var (
	p50 = lat(func(l *latResult) float64 { return l.P50 })
	p99 = lat(func(l *latResult) float64 { return l.P99 })
)

func fwd(f func(*forwarderStats) float64) func(pathResult) (float64, bool) {
	return func(p pathResult) (float64, bool) { return pick(p.Forwarders, f) }
}

// spread is "median (min-max)" of path i's value over the rounds.
func spread(rounds []roundResult, i int, value func(pathResult) (float64, bool)) string {
	return spreadOf(rounds, i, value, "%.1f")
}

// spreadOf is spread with the values printed in format.
func spreadOf(rounds []roundResult, i int, value func(pathResult) (float64, bool), format string) string {
	return medianRange(valuesOf(rounds, i, value), format)
}

// valuesOf is path i's value in each round that has one.
func valuesOf(rounds []roundResult, i int, value func(pathResult) (float64, bool)) []float64 {
	var vs []float64
	for _, r := range rounds {
		if v, ok := value(r.Paths[i]); ok {
			vs = append(vs, v)
		}
	}
	return vs
}

// ratioSpread is spread of path i's value over path j's, round by round.
func ratioSpread(rounds []roundResult, i, j int, value func(pathResult) (float64, bool)) string {
	var vs []float64
	for _, r := range rounds {
		a, ok1 := value(r.Paths[i])
		d, ok2 := value(r.Paths[j])
		if ok1 && ok2 && d > 0 {
			vs = append(vs, a/d)
		}
	}
	return medianRange(vs, "%.2f")
}

func medianRange(vs []float64, format string) string {
	if len(vs) == 0 {
		return "—"
	}
	slices.Sort(vs)
	return fmt.Sprintf(format+" ("+format+"-"+format+")", medianOf(vs), vs[0], vs[len(vs)-1])
}

// medianOf sorts vs and returns its median.
func medianOf(vs []float64) float64 {
	slices.Sort(vs)
	if len(vs)%2 == 0 {
		return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
	}
	return vs[len(vs)/2]
}

// callsTable is the forwarders' system calls per round trip by name
// (-perf), median over the rounds, and how many failed with EAGAIN.
func callsTable(rep *report) string {
	var names []string
	for _, r := range rep.Rounds {
		for _, p := range r.Paths {
			if p.Forwarders != nil {
				for c := range p.Forwarders.Calls {
					if !slices.Contains(names, c) {
						names = append(names, c)
					}
				}
			}
		}
	}
	if len(names) == 0 {
		return ""
	}
	slices.Sort(names)
	var b strings.Builder
	b.WriteString("\nSystem calls per round trip by name (median over the rounds), both hosts' forwarders:\n\n| path |")
	for _, c := range names {
		b.WriteString(" " + c + " |")
	}
	b.WriteString(" failed with EAGAIN |\n|---|" + strings.Repeat("--:|", len(names)+1) + "\n")
	for i, p := range rep.Paths {
		if p.Forwarders == nil {
			continue
		}
		b.WriteString("| " + p.Path + " |")
		for _, c := range names {
			b.WriteString(" " + median(rep.Rounds, i, fwd(func(s *forwarderStats) float64 { return s.Calls[c] })) + " |")
		}
		b.WriteString(" " + median(rep.Rounds, i, fwd(func(s *forwarderStats) float64 { return s.EAGAIN })) + " |\n")
	}
	return b.String()
}

// median is path i's median value over the rounds.
func median(rounds []roundResult, i int, value func(pathResult) (float64, bool)) string {
	vs := valuesOf(rounds, i, value)
	if len(vs) == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f", medianOf(vs))
}

var (
	gbps1 = tcp1(func(r *iperfResult) float64 { return r.Gbps })
	gbps4 = tcp4(func(r *iperfResult) float64 { return r.Gbps })
)

// tcpRoundsTable is the TCP throughput of each path over the rounds
// (medians and ranges, and of the per-round ratios to dens), or nothing
// when no round measured TCP: one round moves a ratio like udp / vxlan by
// about 0.1 on a shared machine, so a target is judged on the median.
func tcpRoundsTable(rep *report, dens []string) string {
	measured := false
	for _, r := range rep.Rounds {
		for _, p := range r.Paths {
			measured = measured || p.TCP1 != nil
		}
	}
	if !measured {
		return ""
	}
	var b strings.Builder
	b.WriteString("\nTCP (Gbit/s), median (min-max) over the rounds; the ratios are per round:\n\n| path | 1 stream | 4 streams |")
	for _, d := range dens {
		fmt.Fprintf(&b, " 1 stream / %s |", d)
	}
	b.WriteString("\n|---|" + strings.Repeat("--:|", 2+len(dens)) + "\n")
	for i, p := range rep.Paths {
		fmt.Fprintf(&b, "| %s | %s | %s |", p.Path, spreadOf(rep.Rounds, i, gbps1, "%.2f"), spreadOf(rep.Rounds, i, gbps4, "%.2f"))
		for _, d := range dens {
			fmt.Fprintf(&b, " %s |", ratioSpread(rep.Rounds, i, slices.Index(pathNames(rep.Paths), d), gbps1))
		}
		b.WriteString("\n")
	}
	return b.String()
}
