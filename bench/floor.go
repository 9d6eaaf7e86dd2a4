//go:build linux

package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/backend/udp"
	"github.com/flannelu/flannelu/tun"
)

// The forward helper is the udp-floor path's data plane: the simplest
// userspace forwarder in flannel's udp wire format (the UDP payload is the
// raw inner IPv4 packet) that can carry the benchmark's traffic. It has no
// logic worth the name — no batching, no checks beyond what keeps it from
// indexing out of range, no allocation — so what it costs is what any
// forwarder that wakes a thread per packet (flannelu's udp backend is one)
// pays on this machine before doing any work of its own: a blocking read
// returning, one syscall to pass the packet on, and the next read going
// back to sleep.
//
// It has three forms. The default is two locked OS threads, each in a
// blocking read of its own descriptor. With -poll it is flanneld's form
// (backend/udp/proxy_amd64.c, run_proxy): one locked OS thread waits in
// poll(2) on both descriptors and, once either is readable, moves one
// packet each way per turn, without waiting, until neither has any. With
// -poll -raw that thread's system calls bypass the Go scheduler
// (floorsys.go).

const (
	floorTUN  = tun.DefaultName // flanneld's device name
	floorPort = udp.DefaultPort // flanneld's udp backend port
	// floorBuf holds any datagram or TUN read: far above the 1472 MTU, so
	// nothing is ever truncated.
	floorBuf = 65535
)

// floorPeer is one remote lease and the host that owns it.
type floorPeer struct {
	net, mask uint32 // the lease as big-endian integers, for lookup
	lease     netip.Prefix
	to        *unix.SockaddrInet4
}

// peerTable is the forwarder's routing table: a handful of leases, looked
// up by linear scan (no hashing, no allocation).
type peerTable []floorPeer

// peerFlag collects -peer <lease>=<host> flags.
type peerFlag struct{ table *peerTable }

func (f peerFlag) String() string {
	if f.table == nil {
		return ""
	}
	var s []string
	for _, p := range *f.table {
		s = append(s, fmt.Sprintf("%v=%v", p.lease, netip.AddrFrom4(p.to.Addr)))
	}
	return strings.Join(s, " ")
}

func (f peerFlag) Set(v string) error {
	p, err := parsePeer(v)
	if err != nil {
		return err
	}
	*f.table = append(*f.table, p)
	return nil
}

// parsePeer reads "198.18.2.0/24=192.0.2.2": the peer's lease (a network
// address, IPv4) and its underlay address, where it listens on floorPort.
func parsePeer(v string) (floorPeer, error) {
	lease, host, ok := strings.Cut(v, "=")
	if !ok {
		return floorPeer{}, fmt.Errorf("peer %q: want <lease>=<host>, e.g. 198.18.2.0/24=192.0.2.2", v)
	}
	pfx, err := netip.ParsePrefix(lease)
	if err != nil || !pfx.Addr().Is4() {
		return floorPeer{}, fmt.Errorf("peer %q: lease is not an IPv4 prefix: %v", v, err)
	}
	if pfx.Masked() != pfx {
		return floorPeer{}, fmt.Errorf("peer %q: lease %v is not a network address (%v)", v, pfx, pfx.Masked())
	}
	addr, err := netip.ParseAddr(host)
	if err != nil || !addr.Is4() {
		return floorPeer{}, fmt.Errorf("peer %q: host is not an IPv4 address: %v", v, err)
	}
	a := pfx.Addr().As4()
	// A shift by 32 gives 0 in Go: /0 matches everything.
	return floorPeer{net: binary.BigEndian.Uint32(a[:]), mask: ^uint32(0) << (32 - pfx.Bits()), lease: pfx,
		to: &unix.SockaddrInet4{Port: floorPort, Addr: addr.As4()}}, nil
}

// lookup returns where an inner IPv4 packet goes, nil for nowhere (not
// IPv4, too short, or no lease matches).
func (t peerTable) lookup(pkt []byte) *unix.SockaddrInet4 {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return nil
	}
	dst := binary.BigEndian.Uint32(pkt[16:20])
	for i := range t {
		if dst&t[i].mask == t[i].net {
			return t[i].to
		}
	}
	return nil
}

// forwarder is the helper's two file descriptors. The Go netpoller is
// deliberately not involved: a thread sleeps in read(2) or poll(2).
type forwarder struct {
	tun, sock int
	peers     peerTable
	recvFlags int       // MSG_DONTWAIT in the poll form, as flanneld's recv
	sys       syscaller // nil: unix.Syscall6; the -raw form: unix.RawSyscall6
}

// toPeer moves one packet from the TUN to its peer host. A packet no lease
// matches is dropped; so is one the socket refuses (ECONNREFUSED from an
// earlier ICMP error, ENOBUFS): the floor keeps going.
func (f *forwarder) toPeer(buf []byte) error {
	n, err := f.read(f.tun, buf)
	if err != nil {
		return err
	}
	if to := f.peers.lookup(buf[:n]); to != nil {
		f.sendto(f.sock, buf[:n], to) //nolint:errcheck // a lost packet, see above
	}
	return nil
}

// fromPeer moves one datagram from the socket into the TUN.
func (f *forwarder) fromPeer(buf []byte) error {
	n, err := f.recv(f.sock, buf, f.recvFlags)
	if err != nil {
		return err
	}
	f.write(f.tun, buf[:n]) //nolint:errcheck // a packet the TUN refuses is dropped
	return nil
}

// loop runs step on this goroutine's own OS thread until it fails.
func (f *forwarder) loop(name string, step func([]byte) error) error {
	runtime.LockOSThread()
	buf := make([]byte, floorBuf)
	for {
		if err := step(buf); err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
}

// pollLoop is flanneld's proxy loop on this goroutine's own OS thread:
// the TUN non-blocking, the socket read with MSG_DONTWAIT (its sends
// still block, as flanneld's do), poll(2) on both; once either is
// readable, one packet each way per turn until a turn moves none. That
// costs a failed read or two per wake-up, which flanneld judged cheaper
// than polling again. It returns when a descriptor fails.
func (f *forwarder) pollLoop() error {
	runtime.LockOSThread()
	fds, err := f.pollMode()
	if err != nil {
		return err
	}
	buf := make([]byte, floorBuf)
	for {
		if err := f.pollOnce(fds, buf); err != nil {
			return err
		}
	}
}

// pollMode makes the TUN non-blocking and the socket's reads MSG_DONTWAIT
// and returns what to poll.
func (f *forwarder) pollMode() ([]unix.PollFd, error) {
	if err := unix.SetNonblock(f.tun, true); err != nil {
		return nil, fmt.Errorf("TUN O_NONBLOCK: %w", err)
	}
	f.recvFlags = unix.MSG_DONTWAIT
	return []unix.PollFd{{Fd: int32(f.tun), Events: unix.POLLIN}, {Fd: int32(f.sock), Events: unix.POLLIN}}, nil
}

// pollOnce waits until the TUN or the socket is readable, then moves
// packets until a turn moves none.
func (f *forwarder) pollOnce(fds []unix.PollFd, buf []byte) error {
	if err := f.poll(fds); err != nil {
		if errors.Is(err, unix.EINTR) {
			return nil
		}
		return fmt.Errorf("poll: %w", err)
	}
	for moved := true; moved; {
		out, err := tryStep(f.toPeer, buf)
		if err != nil {
			return fmt.Errorf("to peer: %w", err)
		}
		in, err := tryStep(f.fromPeer, buf)
		if err != nil {
			return fmt.Errorf("from peer: %w", err)
		}
		moved = out || in
	}
	return nil
}

// tryStep runs one step of the poll form: whether it moved a packet, or
// the error that ends the loop (EAGAIN and EINTR end neither).
func tryStep(step func([]byte) error, buf []byte) (bool, error) {
	err := step(buf)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
		return false, nil
	}
	return false, err
}

// forwardMain is the forward helper: -local <underlay address> and one
// -peer per remote lease; -poll and -raw select the form. It creates
// flannel0 (unconfigured: the harness configures it as flannelu would)
// only once its socket is bound, so a flannel0 that exists means the
// forwarder is ready. It runs until SIGTERM/SIGINT.
func forwardMain(args []string) int {
	var peers peerTable
	fs, local, poll, raw := forwardFlags(&peers)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *raw && !*poll {
		fmt.Fprintln(os.Stderr, "forward: -raw is a form of -poll")
		return 2
	}
	f, err := openForwarder(*local, peers)
	if err != nil {
		fmt.Fprintln(os.Stderr, "forward:", err)
		return 1
	}
	// A thread blocked in read(2) cannot be interrupted from Go; returning
	// from here ends the process, threads and all, and closing the TUN fd
	// removes flannel0.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	failed := make(chan error, 2)
	form := f.start(*poll, *raw, failed)
	fmt.Printf("forward: created %s, bound %s:%d, peers %v, %s\n", floorTUN, *local, floorPort, peerFlag{&peers}, form)
	select {
	case <-sig:
		return 0
	case err := <-failed:
		fmt.Fprintln(os.Stderr, "forward:", err)
		return 1
	}
}

// start runs the forwarder's loops in the form asked for, each sending
// the error that ends it to failed, and names the form.
func (f *forwarder) start(poll, raw bool, failed chan<- error) string {
	if raw {
		f.sys = unix.RawSyscall6
	}
	if poll {
		go func() { failed <- f.pollLoop() }()
		return "one thread in poll" + map[bool]string{true: ", raw system calls", false: ""}[raw]
	}
	go func() { failed <- f.loop("to peer", f.toPeer) }()
	go func() { failed <- f.loop("from peer", f.fromPeer) }()
	return "two threads"
}

// forwardFlags is the forward helper's command line; -peer appends to
// peers.
func forwardFlags(peers *peerTable) (fs *flag.FlagSet, local *string, poll, raw *bool) {
	fs = flag.NewFlagSet("forward", flag.ContinueOnError)
	local = fs.String("local", "", "this host's underlay IPv4 address (the socket binds <local>:8285)")
	fs.Var(peerFlag{peers}, "peer", "<lease>=<host underlay address>, once per remote host")
	poll = fs.Bool("poll", false, "one thread in poll(2) on both descriptors (flanneld's form) instead of two blocking threads")
	raw = fs.Bool("raw", false, "with -poll: system calls the Go scheduler is not told about (the thread keeps its P while it sleeps)")
	return fs, local, poll, raw
}

// openForwarder binds the UDP socket, then creates the TUN.
func openForwarder(local string, peers peerTable) (*forwarder, error) {
	addr, err := netip.ParseAddr(local)
	if err != nil || !addr.Is4() {
		return nil, fmt.Errorf("-local %q: not an IPv4 address", local)
	}
	if len(peers) == 0 {
		return nil, errors.New("no -peer: nothing to forward to")
	}
	sock, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("UDP socket: %w", err)
	}
	if err := unix.Bind(sock, &unix.SockaddrInet4{Port: floorPort, Addr: addr.As4()}); err != nil {
		unix.Close(sock)
		return nil, fmt.Errorf("bind %v:%d: %w", addr, floorPort, err)
	}
	tun, err := openTUN(floorTUN)
	if err != nil {
		unix.Close(sock)
		return nil, err
	}
	return &forwarder{tun: tun, sock: sock, peers: peers}, nil
}

// openTUN creates a plain TUN (no packet information header: reads and
// writes are bare IP packets) and leaves its fd blocking.
func openTUN(name string) (int, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("TUN %s: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("TUNSETIFF %s: %w", name, err)
	}
	return fd, nil
}
