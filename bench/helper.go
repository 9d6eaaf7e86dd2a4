//go:build linux

package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"sort"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// helperEnv selects the helper mode when the harness re-runs itself
// inside a namespace: udpsend, udprecv, echo or ping in a pod, forward
// (the udp-floor path's forwarder, floor.go) in a host.
const helperEnv = "FLANNELU_BENCH_HELPER"

const (
	payloadLen = 64
	batchLen   = 64
	// pingWarmups round trips start each ping-pong run, not counted.
	pingWarmups = 100
)

// helperMain runs one traffic tool and prints its result as one JSON line.
func helperMain(mode string, args []string) int {
	if mode == "forward" {
		return forwardMain(args) // its own flags; runs until signalled
	}
	fs := flag.NewFlagSet(mode, flag.ContinueOnError)
	addr := fs.String("addr", "", "address:port")
	tag := fs.Uint64("tag", 0, "run tag in the first 8 payload bytes")
	pps := fs.Int("pps", 0, "offered packets per second, 0 = max")
	dur := fs.Duration("dur", time.Second, "how long to send")
	count := fs.Int("n", 1000, "round trips")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var res any
	var err error
	switch mode {
	case "udpsend":
		res, err = udpSend(*addr, *tag, *pps, *dur)
	case "udprecv":
		res, err = udpRecv(*addr, *tag)
	case "echo":
		err = echoServe(*addr)
	case "ping":
		res, err = pingPong(*addr, *count)
	default:
		err = fmt.Errorf("unknown helper mode %q", mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	json.NewEncoder(os.Stdout).Encode(res) //nolint:errcheck // stdout
	return 0
}

type sendResult struct {
	Sent    int64   `json:"sent"`
	Errors  int64   `json:"errors"`
	Seconds float64 `json:"seconds"`
}

// udpSend sends 64-byte datagrams with sendmmsg for dur, paced to pps:
// each round sends what the clock says is due (at most a batch), so the
// average rate is exact while bursts stay short.
func udpSend(addr string, tag uint64, pps int, dur time.Duration) (*sendResult, error) {
	c, err := net.Dial("udp4", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	pc := ipv4.NewPacketConn(c.(*net.UDPConn))
	payload := make([]byte, payloadLen)
	binary.BigEndian.PutUint64(payload, tag)
	msgs := make([]ipv4.Message, batchLen)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{payload}
	}
	var r sendResult
	start := time.Now()
	for {
		elapsed := time.Since(start)
		if elapsed >= dur {
			break
		}
		n := int64(batchLen)
		if pps > 0 {
			if n = min(int64(elapsed.Seconds()*float64(pps))-r.Sent, batchLen); n <= 0 {
				time.Sleep(20 * time.Microsecond)
				continue
			}
		}
		k, err := pc.WriteBatch(msgs[:n], 0)
		r.Sent += int64(k)
		if err != nil {
			r.Errors++ // ECONNREFUSED from an earlier ICMP, ENOBUFS: keep going
		}
	}
	r.Seconds = time.Since(start).Seconds()
	return &r, nil
}

// udpRecv counts datagrams carrying tag with recvmmsg until SIGTERM (or a
// hard limit of two minutes).
func udpRecv(addr string, tag uint64) (map[string]int64, error) {
	c, err := net.ListenPacket("udp4", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := forceRcvBuf(c.(*net.UDPConn), 8<<20); err != nil {
		return nil, err
	}
	var stop atomic.Bool
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sig; stop.Store(true) }()
	pc := ipv4.NewPacketConn(c)
	msgs := make([]ipv4.Message, batchLen)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 256)}
	}
	fmt.Println(`{"ready":true}`)
	var got, other int64
	for limit := time.Now().Add(2 * time.Minute); !stop.Load() && time.Now().Before(limit); {
		pc.SetReadDeadline(time.Now().Add(50 * time.Millisecond)) //nolint:errcheck // a timeout only ends one read
		n, _ := pc.ReadBatch(msgs, 0)
		for _, m := range msgs[:max(n, 0)] {
			if m.N >= 8 && binary.BigEndian.Uint64(m.Buffers[0][:8]) == tag {
				got++
			} else {
				other++
			}
		}
	}
	return map[string]int64{"received": got, "other": other}, nil
}

func forceRcvBuf(c *net.UDPConn, size int) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size)
	}); err != nil {
		return err
	}
	return serr
}

// echoServe answers every datagram with itself, with blocking syscalls
// on one thread (no poller in the way), until killed.
func echoServe(addr string) error {
	fd, err := udpSocket(addr, true)
	if err != nil {
		return err
	}
	buf := make([]byte, 2048)
	for {
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return err
		}
		unix.Sendto(fd, buf[:n], 0, from) //nolint:errcheck // a lost answer is a lost round trip
	}
}

// replyWait is how long a round trip may take before it counts as lost:
// long, because a loaded machine delays a reply by many milliseconds and
// the smoke test requires none lost; a lost one costs this much time.
const replyWait = time.Second

type latencyOut struct {
	RoundTrips int     `json:"round_trips"`
	Lost       int     `json:"lost"`
	P50        float64 `json:"p50_us"`
	P99        float64 `json:"p99_us"`
	Mean       float64 `json:"mean_us"`
}

// pingPong does n sequential 64-byte round trips (after 100 warm-ups) with
// blocking send/recv; a reply not back within replyWait counts as lost. It
// stops early after 60 s.
func pingPong(addr string, n int) (*latencyOut, error) {
	fd, err := udpSocket(addr, false)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(replyWait.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return nil, err
	}
	out := make([]byte, payloadLen)
	in := make([]byte, 2048)
	rtts := make([]time.Duration, 0, n)
	lost := 0
	limit := time.Now().Add(time.Minute)
	for seq := uint64(0); len(rtts) < n && time.Now().Before(limit); seq++ {
		binary.BigEndian.PutUint64(out, seq)
		rtt, ok := roundTrip(fd, out, in, seq)
		if seq < pingWarmups {
			continue
		}
		if !ok {
			lost++
			continue
		}
		rtts = append(rtts, rtt)
	}
	return summarize(rtts, lost)
}

// roundTrip sends one datagram and waits for the echo of seq, skipping
// late answers to earlier ones.
func roundTrip(fd int, out, in []byte, seq uint64) (time.Duration, bool) {
	t0 := time.Now()
	if _, err := unix.Write(fd, out); err != nil {
		return 0, false
	}
	for {
		k, err := unix.Read(fd, in)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return 0, false // timeout (EAGAIN) or refused
		}
		if k >= 8 && binary.BigEndian.Uint64(in) == seq {
			return time.Since(t0), true
		}
	}
}

func summarize(rtts []time.Duration, lost int) (*latencyOut, error) {
	if len(rtts) == 0 {
		return nil, fmt.Errorf("no round trip completed (%d lost)", lost)
	}
	sort.Slice(rtts, func(i, j int) bool { return rtts[i] < rtts[j] })
	var sum time.Duration
	for _, d := range rtts {
		sum += d
	}
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	pct := func(p float64) float64 { return us(rtts[min(len(rtts)-1, int(p*float64(len(rtts))))]) }
	return &latencyOut{RoundTrips: len(rtts), Lost: lost, P50: pct(0.50), P99: pct(0.99),
		Mean: us(sum / time.Duration(len(rtts)))}, nil
}

// udpSocket opens a blocking UDP socket of addr's family bound to addr
// (server) or connected to it (client).
func udpSocket(addr string, bind bool) (int, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return -1, err
	}
	family, sa := unix.AF_INET6, unix.Sockaddr(&unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()})
	if ap.Addr().Unmap().Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()}
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if bind {
		err = unix.Bind(fd, sa)
	} else {
		err = unix.Connect(fd, sa)
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}
