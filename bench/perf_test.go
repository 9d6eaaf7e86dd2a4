//go:build linux

package main

import (
	"math"
	"strings"
	"testing"

	"github.com/flannelu/flannelu/testbed"
)

// perfSample is perf stat -x, --per-thread output for two threads of one
// forwarder over 100 round trips (abridged: the events not shown count 0).
const perfSample = `# started on Mon Dec  1 03:19:27 2026

flannelu-9408,<not counted>,,raw_syscalls:sys_enter,0,100.00,,
flannelu-9411,1106,,raw_syscalls:sys_enter,1982093,100.00,,
flannelu-9412,148,,raw_syscalls:sys_enter,1982093,100.00,,
flannelu-9411,233,,context-switches,1982093,100.00,,
flannelu-9412,150,,context-switches,1982093,100.00,,
flannelu-9411,2,,cpu-migrations,1982093,100.00,,
flannelu-9411,11.77,msec,task-clock,1982093,100.00,,
flannelu-9412,3.02,msec,task-clock,1982093,100.00,,
flannelu-9411,300,,raw_syscalls:sys_exit,1982093,100.00,,
flannelu-9411,358,,syscalls:sys_enter_epoll_pwait,1982093,100.00,,
flannelu-9411,300,,syscalls:sys_enter_read,1982093,100.00,,
flannelu-9411,0,,syscalls:sys_enter_poll,1982093,100.00,,
flannelu-9412,85,,syscalls:sys_enter_nanosleep,1982093,100.00,,
flannelu-9412,1,,syscalls:sys_enter_sched_yield,1982093,100.00,,
flannelu-9411,5,,instructions,1982093,100.00,,
`

func TestParsePerf(t *testing.T) {
	s, err := parsePerf(perfSample, map[string]string{"9411": "h1", "9412": "h1"}, 100)
	if err != nil {
		t.Fatal(err)
	}
	near := func(name string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-9 {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	near("syscalls", s.Syscalls, 12.54)
	near("switches", s.Switches, 3.83)
	near("migrations", s.Migrations, 0.02)
	near("CPU µs", s.CPUMicros, 147.9)
	near("EAGAIN", s.EAGAIN, 3)
	near("epoll_pwait", s.Calls["epoll_pwait"], 3.58)
	near("nanosleep", s.Calls["nanosleep"], 0.85)
	// poll (0 calls) and an event -perf did not ask for (instructions)
	// are left out, sched_yield (once per 100 round trips) is kept.
	if len(s.Calls) != 4 || s.Calls["read"] != 3 || s.Calls["sched_yield"] != 0.01 {
		t.Errorf("calls %v, want epoll_pwait, read, nanosleep, sched_yield", s.Calls)
	}
	if len(s.Threads) != 2 || s.Threads[0].Name != "h1 flannelu-9411" || s.Threads[1].Name != "h1 flannelu-9412" ||
		s.Threads[0].Calls["read"] != 3 {
		t.Errorf("threads %+v", s.Threads)
	}
	if _, err := parsePerf("", nil, 100); err == nil || !strings.Contains(err.Error(), "counted nothing") {
		t.Errorf("empty perf output: %v", err)
	}
	if _, err := parsePerf(perfSample, nil, 0); err == nil {
		t.Error("zero round trips accepted")
	}
}

func TestRoundsMarkdown(t *testing.T) {
	round := func(load string, udp, fld float64) roundResult {
		return roundResult{LoadAvg: load, Paths: []pathResult{
			{Path: "udp", Latency: &latResult{P50: udp, P99: 2 * udp},
				Forwarders: &forwarderStats{Syscalls: 24, Switches: 6, CPUMicros: 150, Calls: map[string]float64{"read": 6}, EAGAIN: 6,
					Threads: make([]threadStats, 4)}},
			{Path: flanneldPath, Latency: &latResult{P50: fld, P99: 2 * fld},
				Forwarders: &forwarderStats{Syscalls: 27, Switches: 8, CPUMicros: 180, Calls: map[string]float64{"poll": 3}, EAGAIN: 9}},
		}}
	}
	rep := &report{Settings: settings{RoundTrips: 2000}}
	rep.Rounds = []roundResult{round("1.00 2.00 3.00", 30, 20), round("4.00 5.00 6.00", 60, 20), round("0.50 0.50 0.50", 40, 40)}
	rep.Paths = rep.Rounds[0].Paths
	containsAll(t, "rounds summary", roundsMarkdown(rep),
		"3 interleaved rounds",
		// medians and ranges of the values, and of the per-round ratios (1.5, 3, 1)
		"| udp | 40.0 (30.0-60.0) | 80.0 (60.0-120.0) | 1.50 (1.00-3.00) | 1.50 (1.00-3.00) | 24.0 (24.0-24.0) | 6.0 (6.0-6.0) | 0.0 (0.0-0.0) | 150.0 (150.0-150.0) | 4.0 (4.0-4.0) |",
		"| path | poll | read | failed with EAGAIN |",
		"| udp | 0.00 | 6.00 | 6.00 |",
		"| flanneld-udp | 3.00 | 0.00 | 9.00 |",
		"| 2 | 4.00 5.00 6.00 | 60 / 120 | 20 / 40 |")
}

// TestPerfFloor counts the floor forwarders' system calls during two
// interleaved latency-only rounds of the three floor forms (about 20 s as
// root): per round trip each host's forwarder reads the ping from one
// side and passes it on, then the pong from the other, so the two-thread
// floor makes exactly one read, sendto, recvfrom and write per host, and
// the poll forms the same passes plus their polls and their reads that
// find nothing. The raw poll form never tells the Go scheduler it sleeps,
// so one thread per host does it all and the runtime wakes no other.
func TestPerfFloor(t *testing.T) {
	testbed.RequireRoot(t)
	if testing.Short() {
		t.Skip("-short: builds namespace testbeds")
	}
	cfg, err := parseFlags([]string{"-quick", "-paths", floorPath + "," + floorPollPath + "," + floorRawPath, "-measure", "latency", "-perf",
		"-rounds", "2", "-name", uniqueName("perf")})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rounds) != 2 {
		t.Fatalf("%d rounds, want 2", len(rep.Rounds))
	}
	for _, r := range rep.Rounds {
		for _, p := range r.Paths {
			f := p.Forwarders
			if p.TCP1 != nil || p.UDP != nil || p.Latency == nil || f == nil {
				t.Fatalf("%s: want round trips and forwarder counts only: %+v", p.Path, p)
			}
			for _, c := range []string{"read", "sendto", "recvfrom", "write"} {
				want := 2.0 // one per host
				if p.Path != floorPath && (c == "read" || c == "recvfrom") {
					want = 2 + f.EAGAIN/2 // and the turns that found nothing
				}
				if math.Abs(f.Calls[c]-want) > 0.05 {
					t.Errorf("%s: %s %.3f per round trip, want %.2f (%v)", p.Path, c, f.Calls[c], want, f.Calls)
				}
			}
			// The poll forms wait in poll before each packet unless their
			// drain loop finds the next one (at most 2 per host); the
			// two-thread form never polls, and each of its threads sleeps
			// in read before each packet: four wake-ups at least.
			polls := f.Calls["ppoll"] + f.Calls["poll"]
			if p.Path != floorPath && (polls < 0.5 || polls > 4.1) || p.Path == floorPath && (polls != 0 || f.Switches < 4) {
				t.Errorf("%s: %.2f polls, %.2f context switches per round trip", p.Path, polls, f.Switches)
			}
		}
		// The runtime's own sleeps and wake-ups (sysmon, P hand-offs):
		// the raw form makes a fraction of the poll form's.
		runtimeCalls := func(f *forwarderStats) float64 { return f.Calls["futex"] + f.Calls["nanosleep"] }
		poll, raw := r.Paths[1].Forwarders, r.Paths[2].Forwarders
		// Runtime threads (sysmon, the netpoller) wake now and then on a
		// loaded machine, more so under the race detector; what must hold
		// is that one thread per host does all the forwarding.
		if n := forwardingThreads(raw); n != 2 || runtimeCalls(raw) > runtimeCalls(poll)/2 {
			t.Errorf("%s: %d forwarding threads %+v, futex and nanosleep %.2f per round trip (poll form: %.2f): want one thread per host, and fewer",
				floorRawPath, n, raw.Threads, runtimeCalls(raw), runtimeCalls(poll))
		}
	}
	containsAll(t, "rounds summary", roundsMarkdown(rep), "| udp-floor-poll | ", "failed with EAGAIN")
}

// forwardingThreads counts the threads that moved packets: those that
// sent on the socket or wrote to the TUN.
func forwardingThreads(f *forwarderStats) int {
	n := 0
	for _, th := range f.Threads {
		if th.Calls["sendto"] > 0 || th.Calls["write"] > 0 {
			n++
		}
	}
	return n
}
