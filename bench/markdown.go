//go:build linux

package main

import (
	"fmt"
	"strings"
)

// markdown renders the harness's BENCHMARKS.md section, markers included.
func markdown(rep *report) string {
	var b strings.Builder
	begin, end := markers(rep.Settings.PinHosts)
	b.WriteString(begin + "\n")
	if rep.Settings.PinHosts {
		b.WriteString("## End to end, pinned hosts: each host and its pod on a CPU of its own\n\n")
		b.WriteString("Written by the harness in `bench/` (`make bench-pinned`); re-running it replaces this section only.\n")
		b.WriteString("Machine-readable results: `bench/results-pinned.json`.\n\n")
	} else {
		b.WriteString("## End to end: pod to pod across two hosts\n\n")
		b.WriteString("Written by the harness in `bench/` (`make bench`); re-running it replaces this section only.\n")
		b.WriteString("Machine-readable results: `bench/results.json`.\n\n")
	}
	writeEnv(&b, rep)
	b.WriteString("\n" + table(rep, append(metricRows(rep.Settings.Rates), ipv6Rows()...), true))
	b.WriteString("\nRaw numbers:\n\n" + table(rep, nil, false))
	b.WriteString(rawRows(rep))
	writeErrors(&b, rep)
	writeMethod(&b, rep)
	b.WriteString(end + "\n")
	return b.String()
}

func writeEnv(b *strings.Builder, rep *report) {
	fmt.Fprintf(b, "| Run | |\n|---|---|\n")
	fmt.Fprintf(b, "| Date | %s |\n", rep.Date)
	fmt.Fprintf(b, "| Machine | %s, %d cores, %.1f GiB |\n", rep.CPU, rep.Cores, rep.MemGiB)
	fmt.Fprintf(b, "| Kernel | %s |\n", rep.Kernel)
	fmt.Fprintf(b, "| Go | %s |\n", rep.Go)
	fmt.Fprintf(b, "| flannelu | %s |\n", rep.Flannelu)
	fmt.Fprintf(b, "| Load average at start | %s (1, 5, 15 min; other work on the machine makes the numbers noisy) |\n", rep.LoadAvg)
	fmt.Fprintf(b, "| Command | `%s` |\n", rep.Command)
	s := rep.Settings
	extra := map[bool]string{true: "; -quick", false: ""}[s.Quick] +
		map[bool]string{true: "; -pin: host 1 and its pod on CPU 0, host 2 and its pod on CPU 1", false: ""}[s.PinHosts] +
		map[bool]string{true: "; -perf: forwarders counted by perf stat during the round trips", false: ""}[s.Perf]
	if len(s.Measures) > 0 && len(s.Measures) < len(allMeasures) {
		extra += "; only " + strings.Join(s.Measures, ", ")
	}
	fmt.Fprintf(b, "| Settings | iperf3 %g s; 64 B UDP %g s per rate; %d round trips%s |\n",
		s.IperfSeconds, s.UDPSeconds, s.RoundTrips, extra)
}

type rawLine struct {
	label string
	f     func(pathResult) string
}

// rawRows are the counts behind the table, one line per measurement.
func rawRows(rep *report) string {
	lines := []rawLine{
		{"TCP 1 stream: GB received, retransmits", func(p pathResult) string { return iperfRaw(p.TCP1) }},
		{"TCP 4 streams: GB received, retransmits", func(p pathResult) string { return iperfRaw(p.TCP4) }},
		{"CPU during TCP 1 stream: CPU s; busy cores just before", func(p pathResult) string {
			if p.TCP1 == nil {
				return "—"
			}
			return fmt.Sprintf("%.2f; %.2f", p.TCP1.CPUSeconds, p.TCP1.BusyBefore)
		}},
	}
	for i, pps := range rep.Settings.Rates {
		lines = append(lines, rawLine{"64 B UDP, " + rateName(pps) + ": sent, received, sent kpps", func(p pathResult) string {
			if i >= len(p.UDP) {
				return "—"
			}
			u := p.UDP[i]
			return fmt.Sprintf("%d, %d, %.0f", u.Sent, u.Received, u.SentPPS/1e3)
		}})
	}
	lines = append(lines, rawLine{"Round trips: done, lost, mean µs", func(p pathResult) string {
		if p.Latency == nil {
			return "—"
		}
		return fmt.Sprintf("%d, %d, %.1f", p.Latency.RoundTrips, p.Latency.Lost, p.Latency.Mean)
	}})
	if rep.Settings.Perf {
		lines = append(lines, rawLine{"Forwarders per round trip (-perf): syscalls, switches, migrations, CPU µs; threads woken",
			func(p pathResult) string {
				f := p.Forwarders
				if f == nil {
					return "—"
				}
				return fmt.Sprintf("%.1f, %.1f, %.2f, %.1f; %d", f.Syscalls, f.Switches, f.Migrations, f.CPUMicros, len(f.Threads))
			}})
	}
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "| %s |", l.label)
		for _, p := range rep.Paths {
			fmt.Fprintf(&b, " %s |", l.f(p))
		}
		b.WriteString("\n")
	}
	return b.String()
}

func iperfRaw(r *iperfResult) string {
	if r == nil {
		return "—"
	}
	return fmt.Sprintf("%.2f, %d", float64(r.Bytes)/1e9, r.Retransmits)
}

func writeErrors(b *strings.Builder, rep *report) {
	for _, p := range rep.Paths {
		if p.Error != "" {
			first, _, _ := strings.Cut(p.Error, "\n")
			fmt.Fprintf(b, "\n**%s failed:** %s\n", p.Path, first)
		}
	}
}

func writeMethod(b *strings.Builder, rep *report) {
	b.WriteString(`
How: per path a fresh testbed — hosts 192.0.2.1 and 192.0.2.2 in network namespaces joined by one
veth, etcd on host 1, flannelu on both with Backend.Type udp, vxlan or host-gw, one pod per host
behind cni0 (overlay 198.18.0.0/16) — torn down before the next path. flanneld-udp is the same
testbed, etcd and config with flanneld v0.20.2 (built by ` + "`make flanneld`" + `) in flannelu's place,
udp backend, ` + "`--iface eth0`" + `: the peer flannelu replaces, whose C proxy moves one packet per system
call from one thread in poll() on the TUN and the socket. ipip is flannelu's ipip backend, which on this
kernel (no ipip module) is its userspace path: the udp path's pipeline with IP protocol 4 from a raw socket
on the wire ("ipip / udp" compares the two encapsulations). udp-kube is the udp path in Kubernetes mode:
a real kube-apiserver on host 1 over the same etcd, each host's Node registered with the podCIDR
198.18.<i>.0/24, flannelu with ` + "`--kube-subnet-mgr`" + ` as flannel's service account; "udp-kube / udp"
shows that the store does not touch the data path (1.00× but for noise). The -manual paths are the same
testbed without etcd and flannelu: the harness gives the hosts 198.18.1.0/24 and 198.18.2.0/24 and
programs flannel's layout itself with ip and bridge (host-gw: a route via the peer on eth0; vxlan:
flannel.1 with VNI 1, port 8472, learning off, MTU 1450, then per peer a permanent neighbour, an fdb
entry and an onlink route). udp-floor is the udp backend's layout on the same hand-made leases
(flannel0 set up as flannelu does it: lease /32, MTU 1472, one route for 198.18.0.0/16; flannel's
wire format on port 8285) with the harness's own forwarder in flannelu's place: per host one thread
in a blocking TUN read -> sendto loop and one in a blocking socket read -> TUN write loop, no
batching, no checks. udp-floor-poll is that forwarder in flanneld's form: one thread in poll() on
both descriptors, then one packet each way per turn without waiting until neither has any;
udp-floor-rawpoll the same loop with raw system calls, which the Go scheduler never sees (the thread
keeps its P while it sleeps, as flanneld's C loop keeps its thread). They are
there to show what any userspace forwarder woken per packet pays on this machine before doing any
work of its own (four thread wake-ups per round trip): "udp-floor / vxlan" is about as close to
vxlan as a design like the udp backend's can get here.
All traffic is pod 1 -> pod 2.
TCP: iperf3, receiver side. 64 B UDP: the harness re-run in the pods as a sendmmsg load generator
paced to the offered rate and a recvmmsg receiver; loss = 1 - received/sent. On the kernel paths the
sending core also runs the whole forwarding path (veth hands each packet to its own CPU's softirq),
so their "sent kpps" is their ceiling, reached with no loss; the udp backend's sender only feeds a
TUN device, sends faster, and its excess is lost in flannelu. Round trips: sequential
64 B UDP ping-pong with blocking sockets, 100 warm-ups not counted. CPU per GB: the whole machine's
user+system+irq+softirq time from /proc/stat over the 1-stream iperf3 run, divided by the GB
received; it includes any other work on the machine ("busy cores just before" is that floor).
Ratio columns: "X / vxlan" divides path X's value by vxlan's, "udp / flanneld-udp" flannelu's by
flanneld's (loss too: 0.50× is half flanneld's loss), "udp-kube / udp" Kubernetes mode's by etcd
mode's (loss too); "vxlan / vxlan-manual" and
"host-gw / host-gw-manual" divide flannelu-programmed by hand-made (1.00× = the same). For µs and
CPU s/GB lower is better.
`)
}
