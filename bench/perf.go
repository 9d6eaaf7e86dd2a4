//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// perfEvents are what -perf counts in each forwarding thread during the
// round trips: system calls entered, context switches (a thread going to
// sleep or being preempted: each wake-up of a sleeping thread is one),
// moves to another CPU, and CPU time; then each system call a forwarder
// makes per packet or to sleep and wake (perfSyscalls), and the calls
// that failed with EAGAIN (a read that found nothing), counted on
// raw_syscalls:sys_exit with a filter.
var perfEvents = append([]string{"raw_syscalls:sys_enter", "context-switches", "cpu-migrations", "task-clock", eagainEvent},
	perfSyscalls...)

const eagainEvent = "raw_syscalls:sys_exit"

// perfSyscalls are the system calls counted one by one: the data path's
// reads and writes in each form (flanneld: read, sendto, recv(from),
// write; flannelu: read, sendmmsg, recvmmsg, writev), the waits (poll,
// epoll) and the Go runtime's sleeps and wake-ups (futex, nanosleep,
// sched_yield).
var perfSyscalls = func() []string {
	var evs []string
	for _, c := range []string{"read", "write", "readv", "writev", "recvfrom", "sendto", "recvmsg", "sendmsg",
		"recvmmsg", "sendmmsg", "poll", "ppoll", "epoll_wait", "epoll_pwait", "epoll_pwait2", "futex", "nanosleep",
		"clock_nanosleep", "sched_yield"} {
		evs = append(evs, "syscalls:sys_enter_"+c)
	}
	return evs
}()

// forwarderStats is what the forwarding processes of both hosts (flannelu,
// flanneld or the floor's forwarder) did during the round trips, divided
// by the number of round trips: where a userspace path pays per hop.
type forwarderStats struct {
	Syscalls   float64 `json:"syscalls"`
	Switches   float64 `json:"context_switches"`
	Migrations float64 `json:"cpu_migrations"`
	CPUMicros  float64 `json:"cpu_us"`
	EAGAIN     float64 `json:"eagain"` // system calls that failed with EAGAIN
	// Calls counts the perfSyscalls by name (those made at least once
	// per 100 round trips).
	Calls   map[string]float64 `json:"calls"`
	Threads []threadStats      `json:"threads"` // the threads that took part: at least one switch per 10 round trips
}

// threadStats is one thread's share, per round trip.
type threadStats struct {
	Name       string             `json:"name"` // host, then comm-tid as perf prints it
	Syscalls   float64            `json:"syscalls"`
	Switches   float64            `json:"context_switches"`
	Migrations float64            `json:"cpu_migrations"`
	CPUMicros  float64            `json:"cpu_us"`
	EAGAIN     float64            `json:"eagain"`
	Calls      map[string]float64 `json:"calls"`
}

// fwdProc is one forwarding process and the host it runs on (h1, h2).
type fwdProc struct {
	host string
	pid  int
}

// perfCounter is a running perf stat on the forwarders' threads.
type perfCounter struct {
	cmd   *exec.Cmd
	out   string
	hosts map[string]string // tid -> host
}

// startPerf counts perfEvents per thread of the forwarders until stop.
func startPerf(fwds []fwdProc, dir string) (*perfCounter, error) {
	if len(fwds) == 0 {
		return nil, nil // a kernel path: nothing in userspace to count
	}
	p := &perfCounter{out: filepath.Join(dir, "perf-stat.csv"), hosts: map[string]string{}}
	var pids []string
	for _, f := range fwds {
		pids = append(pids, strconv.Itoa(f.pid))
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", f.pid))
		if err != nil {
			return nil, fmt.Errorf("forwarder on %s: %w", f.host, err)
		}
		for _, t := range tasks {
			p.hosts[t.Name()] = f.host
		}
	}
	// perf attaches with its counters off (-D -1) and turns them on when
	// told on its control descriptor (3), acknowledging on 4: counting
	// has begun once "ack" is read, before any traffic.
	args := []string{"stat", "-x,", "--per-thread", "-p", strings.Join(pids, ","), "-o", p.out,
		"-D", "-1", "--control", "fd:3,4"}
	for _, ev := range perfEvents {
		args = append(args, "-e", ev)
		if ev == eagainEvent {
			args = append(args, "--filter", fmt.Sprintf("ret == %d", -int(syscall.EAGAIN)))
		}
	}
	ctlR, ctlW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer ctlR.Close()
	defer ctlW.Close()
	ackR, ackW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer ackR.Close()
	defer ackW.Close()
	p.cmd = exec.Command("perf", args...)
	p.cmd.ExtraFiles = []*os.File{ctlR, ackW}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("perf stat (apt-get install linux-perf): %w", err)
	}
	if err := p.enable(ctlW, ackR); err != nil {
		p.cmd.Process.Kill() //nolint:errcheck // it failed already
		p.cmd.Wait()         //nolint:errcheck // as above
		return nil, err
	}
	return p, nil
}

// enable turns perf's counters on and waits for its acknowledgement.
func (p *perfCounter) enable(ctl, ack *os.File) error {
	if _, err := ctl.WriteString("enable\n"); err != nil {
		return fmt.Errorf("perf stat control: %w", err)
	}
	if err := ack.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return err
	}
	buf := make([]byte, 16)
	n, err := ack.Read(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "ack") {
		return fmt.Errorf("perf stat did not start counting: %q, %v", buf[:max(n, 0)], err)
	}
	return nil
}

// stop ends perf stat and divides its counts by roundTrips.
func (p *perfCounter) stop(roundTrips int) (*forwarderStats, error) {
	if p == nil {
		return nil, nil
	}
	p.cmd.Process.Signal(syscall.SIGINT) //nolint:errcheck // it may have failed already
	if err := p.cmd.Wait(); err != nil && !strings.Contains(err.Error(), "interrupt") {
		return nil, fmt.Errorf("perf stat: %w", err)
	}
	b, err := os.ReadFile(p.out)
	if err != nil {
		return nil, err
	}
	return parsePerf(string(b), p.hosts, roundTrips)
}

// parsePerf reads perf stat -x, --per-thread output ("comm-tid,value,
// unit,event,..."; task-clock in msec) into per-round-trip numbers.
func parsePerf(out string, hosts map[string]string, roundTrips int) (*forwarderStats, error) {
	if roundTrips <= 0 {
		return nil, fmt.Errorf("perf: %d round trips", roundTrips)
	}
	byThread := map[string]*threadStats{}
	var names []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Split(line, ",")
		if len(f) < 4 || !slices.Contains(perfEvents, f[3]) {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue // <not counted>: the thread never ran
		}
		t := byThread[f[0]]
		if t == nil {
			name := f[0]
			if i := strings.LastIndex(name, "-"); i >= 0 && hosts[name[i+1:]] != "" {
				name = hosts[name[i+1:]] + " " + name
			}
			t = &threadStats{Name: name, Calls: map[string]float64{}}
			byThread[f[0]] = t
			names = append(names, f[0])
		}
		v /= float64(roundTrips)
		switch f[3] {
		case "raw_syscalls:sys_enter":
			t.Syscalls = v
		case "context-switches":
			t.Switches = v
		case "cpu-migrations":
			t.Migrations = v
		case "task-clock":
			t.CPUMicros = v * 1e3
		case eagainEvent:
			t.EAGAIN = v
		default:
			if c, ok := strings.CutPrefix(f[3], "syscalls:sys_enter_"); ok && v > 0 {
				t.Calls[c] = v
			}
		}
	}
	if len(byThread) == 0 {
		return nil, fmt.Errorf("perf stat counted nothing: %q", tail([]byte(out)))
	}
	s := &forwarderStats{Calls: map[string]float64{}}
	for _, n := range names {
		t := byThread[n]
		s.Syscalls += t.Syscalls
		s.Switches += t.Switches
		s.Migrations += t.Migrations
		s.CPUMicros += t.CPUMicros
		s.EAGAIN += t.EAGAIN
		for c, v := range t.Calls {
			s.Calls[c] += v
		}
		if t.Switches >= 0.1 {
			s.Threads = append(s.Threads, *t)
		}
	}
	for c, v := range s.Calls {
		if v < 0.01 {
			delete(s.Calls, c)
		}
	}
	slices.SortFunc(s.Threads, func(a, b threadStats) int { return strings.Compare(a.Name, b.Name) })
	return s, nil
}

// forwarders lists the processes that forward a path's packets in
// userspace: flannelu or flanneld per host, or the floor's forwarders;
// none on the kernel paths (flannelu there only programs the kernel).
func (s *setup) forwarders(path string) []fwdProc {
	var fs []fwdProc
	if path == "udp" || path == flanneldPath || path == wireguardPath {
		for _, n := range s.nodes {
			fs = append(fs, fwdProc{shortHost(n.Host.Name), n.Proc.Cmd.Process.Pid})
		}
	}
	for _, h := range s.helpers {
		fs = append(fs, fwdProc{shortHost(h.host), h.proc.Cmd.Process.Pid})
	}
	slices.SortFunc(fs, func(a, b fwdProc) int { return strings.Compare(a.host, b.host) })
	return fs
}

// shortHost is a host namespace's role: "h1" for fu-bench-udp-h1.
func shortHost(ns string) string {
	return ns[strings.LastIndex(ns, "-")+1:]
}
