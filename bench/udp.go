//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/flannelu/flannelu/testbed"
)

const (
	loadPort = 9000
	echoPort = 9001
)

// udpResult is one 64-byte UDP run at one offered rate.
type udpResult struct {
	OfferedPPS   int     `json:"offered_pps"` // 0: as fast as the sender can
	Seconds      float64 `json:"seconds"`
	Sent         int64   `json:"sent"`
	Received     int64   `json:"received"`
	SendErrors   int64   `json:"send_errors"`
	SentPPS      float64 `json:"sent_pps"`
	DeliveredPPS float64 `json:"delivered_pps"`
	LossPct      float64 `json:"loss_pct"`
}

// latResult is the UDP ping-pong's round-trip times.
type latResult = latencyOut

// measureUDP runs the load generator in src against a receiver in dst at
// each offered rate.
func measureUDP(cfg *config, c *testbed.Bed, src, dst *testbed.Pod) ([]udpResult, error) {
	var out []udpResult
	for i, pps := range cfg.rates {
		r, err := udpRun(cfg, c, src, dst, pps, i)
		if err != nil {
			return out, fmt.Errorf("64-byte UDP at %s: %w", rateName(pps), err)
		}
		out = append(out, *r)
	}
	return out, nil
}

func udpRun(cfg *config, c *testbed.Bed, src, dst *testbed.Pod, pps, i int) (*udpResult, error) {
	tag := rand.Uint64()
	addr := testbed.ListenAddr(dst.Addr, loadPort)
	recv, err := c.Start(dst.NS, "udprecv-"+strconv.Itoa(i), "env", helperEnv+"=udprecv", cfg.self,
		"-addr", addr, "-tag", strconv.FormatUint(tag, 10))
	if err != nil {
		return nil, err
	}
	defer recv.Stop()
	if err := waitListen(dst.NS, "udp", loadPort, 10*time.Second); err != nil {
		return nil, err
	}
	places := lossPlaces(c, src, dst)
	before := lossSnapshot(places)
	out, err := runIn(src.NS, cfg.udpTime+20*time.Second, "env", helperEnv+"=udpsend", cfg.self,
		"-addr", addr, "-tag", strconv.FormatUint(tag, 10), "-pps", strconv.Itoa(pps), "-dur", cfg.udpTime.String())
	if err != nil {
		return nil, err
	}
	var s sendResult
	if err := json.Unmarshal(out, &s); err != nil || s.Seconds == 0 {
		return nil, fmt.Errorf("sender said %q: %v", out, err)
	}
	// A window, not an event: a datagram lost on the way never arrives,
	// so nothing can say "the last one is in". 300 ms is the measurement's
	// line between late and lost; the loss it reports is a number for the
	// table, asserted by no test.
	time.Sleep(300 * time.Millisecond)
	fmt.Fprintf(os.Stderr, "64 B UDP at %s: kernel drop counters: %s\n", rateName(pps), lossDiff(before, lossSnapshot(places)))
	recv.Signal(syscall.SIGTERM)
	if exited, _ := recv.Wait(5 * time.Second); !exited {
		return nil, fmt.Errorf("receiver did not stop: %s", testbed.Tail(recv.Log, 5))
	}
	var got struct{ Received int64 }
	if err := lastJSON(recv.Log, &got); err != nil {
		return nil, err
	}
	r := &udpResult{OfferedPPS: pps, Seconds: s.Seconds, Sent: s.Sent, Received: got.Received,
		SendErrors: s.Errors, SentPPS: float64(s.Sent) / s.Seconds, DeliveredPPS: float64(got.Received) / s.Seconds}
	if s.Sent > 0 {
		r.LossPct = 100 * float64(s.Sent-got.Received) / float64(s.Sent)
	}
	return r, nil
}

// measureLatency runs the ping-pong client in src against an echo server
// in dst. With -perf it also counts what the forwarders fwds do per round
// trip (warm-ups and lost ones included: they cross the forwarders too).
func measureLatency(cfg *config, c *testbed.Bed, src, dst *testbed.Pod, fwds []fwdProc) (*latResult, *forwarderStats, error) {
	addr := testbed.ListenAddr(dst.Addr, echoPort)
	echo, err := c.Start(dst.NS, "echo", "env", helperEnv+"=echo", cfg.self, "-addr", addr)
	if err != nil {
		return nil, nil, err
	}
	defer echo.Stop()
	if err := waitListen(dst.NS, "udp", echoPort, 10*time.Second); err != nil {
		return nil, nil, err
	}
	var counter *perfCounter
	if cfg.perf {
		if counter, err = startPerf(fwds, c.Dir); err != nil {
			return nil, nil, err
		}
	}
	out, err := runIn(src.NS, 90*time.Second, "env", helperEnv+"=ping", cfg.self,
		"-addr", addr, "-n", strconv.Itoa(cfg.roundTrips))
	if err != nil {
		counter.stop(1) //nolint:errcheck // the latency error says more
		return nil, nil, fmt.Errorf("latency: %w", err)
	}
	var l latResult
	if err := json.Unmarshal(out, &l); err != nil {
		counter.stop(1) //nolint:errcheck // as above
		return nil, nil, fmt.Errorf("latency: client said %q: %w", out, err)
	}
	stats, err := counter.stop(l.RoundTrips + l.Lost + pingWarmups)
	return &l, stats, err
}

// lastJSON decodes the last line of a helper's log.
func lastJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	if err := json.Unmarshal(lines[len(lines)-1], v); err != nil {
		return fmt.Errorf("helper log %s: %w: %s", path, err, tail(b))
	}
	return nil
}

func rateName(pps int) string {
	switch {
	case pps == 0:
		return "max"
	case pps%1000000 == 0:
		return strconv.Itoa(pps/1000000) + "M pps"
	case pps%1000 == 0:
		return strconv.Itoa(pps/1000) + "k pps"
	}
	return strconv.Itoa(pps) + " pps"
}
