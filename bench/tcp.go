//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/flannelu/flannelu/testbed"
)

const iperfPort = 5201

// iperfResult is one iperf3 run, receiver side. The CPU fields are the
// whole machine's (all cores, /proc/stat) during the run.
type iperfResult struct {
	Streams     int     `json:"streams"`
	Seconds     float64 `json:"seconds"`
	Gbps        float64 `json:"gbit_per_s"`
	Bytes       int64   `json:"bytes_received"`
	Retransmits int64   `json:"retransmits"`
	CPUSeconds  float64 `json:"cpu_seconds"`
	CPUPerGB    float64 `json:"cpu_seconds_per_gb"`
	// BusyBefore is how many cores were busy (other work on the machine)
	// in the moment before the 1-stream run: the noise floor of CPUPerGB.
	BusyBefore float64 `json:"busy_cores_before,omitempty"`
}

// measureTCP runs iperf3 from src to dst with 1 and with 4 streams; the
// 1-stream run also measures the machine's CPU time.
func measureTCP(cfg *config, c *testbed.Bed, src, dst *testbed.Pod) (one, four *iperfResult, err error) {
	srv, err := iperfServer(c, dst)
	if err != nil {
		return nil, nil, err
	}
	defer srv.Stop()
	idle := 1 * time.Second
	if cfg.quick {
		idle = 200 * time.Millisecond
	}
	busy, err := busyCores(idle)
	if err != nil {
		return nil, nil, err
	}
	before, err := readCPU()
	if err != nil {
		return nil, nil, err
	}
	if one, err = iperf(cfg, src, dst, 1); err != nil {
		return nil, nil, err
	}
	after, err := readCPU()
	if err != nil {
		return nil, nil, err
	}
	one.BusyBefore = busy
	one.CPUSeconds = after.busy - before.busy
	if one.Bytes > 0 {
		one.CPUPerGB = one.CPUSeconds / (float64(one.Bytes) / 1e9)
	}
	// iperf3's server refuses a client ("the server is busy running a
	// test") until it has closed the last one and listens again.
	if err := waitServerIdle(srv, 2); err != nil {
		return nil, nil, err
	}
	four, err = iperf(cfg, src, dst, 4)
	return one, four, err
}

// waitServerIdle waits until iperf3's server has printed its "Server
// listening" banner n times: once at start and once after each test.
func waitServerIdle(srv *testbed.Proc, n int) error {
	return srv.WaitOutput(30*time.Second, fmt.Sprintf("iperf3 server listening (%d)", n), func(log []byte) bool {
		return bytes.Count(log, []byte("Server listening on")) >= n
	})
}

// iperfServer starts iperf3's server in dst, bound to its address, and
// waits until it listens. --forceflush: its banners reach the log as
// they are printed (waitServerIdle reads them).
func iperfServer(c *testbed.Bed, dst *testbed.Pod) (*testbed.Proc, error) {
	srv, err := c.Start(dst.NS, "iperf3-server", "iperf3", "-s", "--forceflush", "-B", dst.Addr.String(), "-p", strconv.Itoa(iperfPort))
	if err != nil {
		return nil, err
	}
	if err := waitListen(dst.NS, "tcp", iperfPort, 10*time.Second); err != nil {
		srv.Stop()
		return nil, err
	}
	return srv, nil
}

// iperfJSON is the part of iperf3 --json output the harness reads.
type iperfJSON struct {
	Error string `json:"error"`
	End   struct {
		SumSent struct {
			Retransmits int64 `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived struct {
			Seconds float64 `json:"seconds"`
			Bytes   int64   `json:"bytes"`
			Bps     float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
}

func iperf(cfg *config, src, dst *testbed.Pod, streams int) (*iperfResult, error) {
	secs := int((cfg.iperfTime + time.Second - 1) / time.Second)
	out, err := runIn(src.NS, cfg.iperfTime+30*time.Second, "iperf3", "-c", dst.Addr.String(),
		"-p", strconv.Itoa(iperfPort), "-t", strconv.Itoa(secs), "-P", strconv.Itoa(streams), "--json")
	var j iperfJSON
	if jerr := json.Unmarshal(out, &j); jerr != nil || j.Error != "" || err != nil {
		return nil, fmt.Errorf("iperf3 -P %d: %v %s: %s", streams, err, j.Error, tail(out))
	}
	r := j.End.SumReceived
	if r.Bytes == 0 {
		return nil, fmt.Errorf("iperf3 -P %d: nothing received", streams)
	}
	return &iperfResult{Streams: streams, Seconds: r.Seconds, Gbps: r.Bps / 1e9, Bytes: r.Bytes,
		Retransmits: j.End.SumSent.Retransmits}, nil
}

// cpuSample is the machine's /proc/stat "cpu" line in seconds: busy is
// user+system+irq+softirq (softirq counts: that is where the kernel paths
// encapsulate and forward), total adds everything else.
type cpuSample struct{ busy, total float64 }

// userHZ is the kernel's USER_HZ, the unit of /proc/stat (100 on Linux).
const userHZ = 100

func readCPU() (cpuSample, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuSample{}, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return cpuSample{}, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var v [7]float64 // user nice system idle iowait irq softirq
	for i := range v {
		n, err := strconv.ParseUint(f[i+1], 10, 64)
		if err != nil {
			return cpuSample{}, fmt.Errorf("/proc/stat: %w", err)
		}
		v[i] = float64(n) / userHZ
	}
	s := cpuSample{busy: v[0] + v[2] + v[5] + v[6]}
	for _, x := range v {
		s.total += x
	}
	return s, nil
}

// busyCores measures how many cores the machine keeps busy over d.
func busyCores(d time.Duration) (float64, error) {
	a, err := readCPU()
	if err != nil {
		return 0, err
	}
	time.Sleep(d)
	b, err := readCPU()
	if err != nil {
		return 0, err
	}
	return (b.busy - a.busy) / d.Seconds(), nil
}

// waitListen waits until a socket listens on port (tcp) or is bound to it
// (udp) inside ns. Unlike a test connection, this leaves a one-shot server
// such as iperf3 alone.
func waitListen(ns testbed.NS, proto string, port int, timeout time.Duration) error {
	flag := map[string]string{"tcp": "-Hltn", "udp": "-Hlun"}[proto]
	return testbed.Eventually(timeout, func() error {
		out, err := ns.Run("ss", flag, "sport", "=", ":"+strconv.Itoa(port))
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) == "" {
			return fmt.Errorf("nothing listens on %s port %d in %s", proto, port, ns.Name)
		}
		return nil
	})
}

// runIn runs a command inside ns with a time limit and returns its stdout
// (stderr is appended to the error).
func runIn(ns testbed.NS, timeout time.Duration, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := ns.Command(ctx, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		err = fmt.Errorf("%s: %w: %s", args[0], err, tail(stderr.Bytes()))
	}
	return out, err
}

func tail(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 400 {
		s = "..." + s[len(s)-400:]
	}
	return s
}
