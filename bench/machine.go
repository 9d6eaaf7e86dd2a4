//go:build linux

package main

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// machine is where and when a harness run ran, and what.
type machine struct {
	Date     string  `json:"date"`
	Command  string  `json:"command"`
	CPU      string  `json:"cpu"`
	Cores    int     `json:"cores"`
	MemGiB   float64 `json:"mem_gib"`
	Kernel   string  `json:"kernel"`
	Go       string  `json:"go"`
	Flannelu string  `json:"flannelu"`
	LoadAvg  string  `json:"load_avg_at_start"`
}

func newMachine(command, flannelu string) machine {
	return machine{
		Date:     time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		Command:  command,
		CPU:      cpuModel(),
		Cores:    runtime.NumCPU(),
		MemGiB:   memGiB(),
		Kernel:   firstLine("/proc/sys/kernel/osrelease"),
		Go:       runtime.Version(),
		Flannelu: flanneluVersion(flannelu),
		LoadAvg:  loadAvg(),
	}
}

// report is one harness run: where it ran and what it measured.
type report struct {
	machine
	Settings settings     `json:"settings"`
	Paths    []pathResult `json:"paths"`
	// Rounds holds every round of a -rounds run (Paths is the first).
	Rounds []roundResult `json:"rounds,omitempty"`
}

// roundResult is one round of a -rounds run.
type roundResult struct {
	LoadAvg string       `json:"load_avg_at_start"`
	Paths   []pathResult `json:"paths"`
}

type settings struct {
	IperfSeconds float64  `json:"iperf_seconds"`
	UDPSeconds   float64  `json:"udp_seconds"`
	Rates        []int    `json:"udp_offered_pps"`
	RoundTrips   int      `json:"round_trips"`
	Quick        bool     `json:"quick"`
	PinHosts     bool     `json:"pin_hosts"`
	Rounds       int      `json:"rounds,omitempty"`
	Measures     []string `json:"measures"`
	Perf         bool     `json:"perf,omitempty"`
}

func newReport(cfg *config) *report {
	return &report{
		machine: newMachine(cfg.command, cfg.flannelu),
		Settings: settings{IperfSeconds: cfg.iperfTime.Seconds(), UDPSeconds: cfg.udpTime.Seconds(),
			Rates: cfg.rates, RoundTrips: cfg.roundTrips, Quick: cfg.quick, PinHosts: cfg.pin,
			Rounds: cfg.rounds, Measures: cfg.measure, Perf: cfg.perf},
	}
}

func firstLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "? " + err.Error()
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(line)
}

// loadAvg is the 1, 5 and 15 minute load average.
func loadAvg() string {
	f := strings.Fields(firstLine("/proc/loadavg"))
	return strings.Join(f[:min(3, len(f))], " ")
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func memGiB() float64 {
	b, _ := os.ReadFile("/proc/meminfo")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return float64(int(kb/(1<<20)*10+0.5)) / 10
		}
	}
	return 0
}

func flanneluVersion(bin string) string {
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}
