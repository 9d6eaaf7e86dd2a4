//go:build linux

package main

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/testbed"
)

// observer records, per peer subnet, when a daemon's host got its route
// and lost it: for the kernel backends from the host's route
// notifications (netlink, the route is the last entry flannel programs
// for a peer), for udp, whose route table lives in the daemon, from the
// daemon's log lines of added and removed peers, timestamped by the
// daemon. Only subnets of the peer length inside the network count.
type observer struct {
	network netip.Prefix
	bits    int

	mu      sync.Mutex
	adds    map[netip.Prefix][]time.Time
	dels    map[netip.Prefix][]time.Time
	present map[netip.Prefix]bool
	errs    []string
	stop    func()
}

func newObserver(network netip.Prefix, bits int) *observer {
	return &observer{network: network, bits: bits, adds: map[netip.Prefix][]time.Time{},
		dels: map[netip.Prefix][]time.Time{}, present: map[netip.Prefix]bool{}, stop: func() {}}
}

func (o *observer) record(dst netip.Prefix, added bool, at time.Time) {
	if dst.Bits() != o.bits || !o.network.Contains(dst.Addr()) {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if added {
		o.adds[dst] = append(o.adds[dst], at)
		o.present[dst] = true
	} else {
		o.dels[dst] = append(o.dels[dst], at)
		delete(o.present, dst)
	}
}

// watchRoutes subscribes to the route notifications of a host's
// namespace, with a receive buffer large enough for thousands of routes
// programmed at once; an overflow is recorded (the times are then
// incomplete, and the report says so).
func (o *observer) watchRoutes(h *testbed.Host) error {
	ns, err := netns.GetFromName(h.Name)
	if err != nil {
		return err
	}
	ch := make(chan netlink.RouteUpdate, 65536)
	done := make(chan struct{})
	err = netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{
		Namespace: &ns, ReceiveBufferSize: 64 << 20, ReceiveBufferForceSize: true,
		ErrorCallback: func(err error) { o.fail(fmt.Sprintf("route notifications: %v", err)) },
	})
	if err != nil {
		ns.Close()
		return err
	}
	o.stop = func() { close(done); ns.Close() }
	go func() {
		for u := range ch {
			if u.Dst == nil || u.Table != unix.RT_TABLE_MAIN {
				continue
			}
			ones, _ := u.Dst.Mask.Size()
			a, ok := netip.AddrFromSlice(u.Dst.IP)
			if !ok {
				continue
			}
			o.record(netip.PrefixFrom(a.Unmap(), ones), u.Type == unix.RTM_NEWROUTE, time.Now())
		}
	}()
	return nil
}

func (o *observer) fail(msg string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.errs) < 5 {
		o.errs = append(o.errs, msg)
	}
}

// logPatterns read a udp daemon's peer lines: flannelu's slog text
// (time=... msg="peer added" ... subnet=...), flanneld's glog
// ("I1207 23:17:00.691234 ... Subnet added: 198.18.0.8/29").
var (
	flanneluPeerLine = regexp.MustCompile(`(?m)^time=(\S+) level=\S+ msg="peer (added|removed|changed)".* subnet=(\S+)`)
	flanneldPeerLine = regexp.MustCompile(`(?m)^I(\d{4} \d\d:\d\d:\d\d\.\d{6})\s.*Subnet (added|removed): (\S+)`)
)

// watchLog follows a udp daemon's log file.
func (o *observer) watchLog(path string, flanneld bool) {
	done := make(chan struct{})
	o.stop = func() { close(done) }
	go func() {
		var f *os.File
		defer func() {
			if f != nil {
				f.Close()
			}
		}()
		var partial []byte
		buf := make([]byte, 1<<20)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			if f == nil {
				var err error
				if f, err = os.Open(path); err != nil {
					continue
				}
			}
			for {
				k, _ := f.Read(buf)
				if k == 0 {
					break
				}
				chunk := append(partial, buf[:k]...)
				cut := bytes.LastIndexByte(chunk, '\n') + 1
				partial = append([]byte(nil), chunk[cut:]...)
				o.parseLog(chunk[:cut], flanneld)
			}
		}
	}()
}

func (o *observer) parseLog(b []byte, flanneld bool) {
	re := flanneluPeerLine
	if flanneld {
		re = flanneldPeerLine
	}
	year := time.Now().Year()
	for _, m := range re.FindAllSubmatch(b, -1) {
		var at time.Time
		var err error
		if flanneld {
			at, err = time.ParseInLocation("2006 0102 15:04:05.000000", fmt.Sprint(year)+" "+string(m[1]), time.Local)
		} else {
			at, err = time.Parse(time.RFC3339Nano, string(m[1]))
		}
		sn, perr := netip.ParsePrefix(string(m[3]))
		if err != nil || perr != nil {
			continue
		}
		o.record(sn.Masked(), string(m[2]) != "removed", at)
	}
}

// countPresent is how many of subnets are routed now.
func (o *observer) countPresent(subnets []netip.Prefix) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, s := range subnets {
		if o.present[s] {
			n++
		}
	}
	return n
}

// firstAfter is the first add (or delete) of dst at or after t; zero when
// none.
func (o *observer) firstAfter(dst netip.Prefix, t time.Time, added bool) (time.Time, int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	times := o.dels[dst]
	if added {
		times = o.adds[dst]
	}
	var first time.Time
	n := 0
	for _, at := range times {
		if at.Before(t.Add(-time.Millisecond)) { // log times are to the millisecond
			continue
		}
		n++
		if first.IsZero() || at.Before(first) {
			first = at
		}
	}
	return first, n
}

// lastEvent is the latest add among subnets (the moment the last of them
// was routed).
func (o *observer) lastAdd(subnets []netip.Prefix) time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	var last time.Time
	for _, s := range subnets {
		for _, at := range o.adds[s] {
			if at.After(last) {
				last = at
			}
		}
	}
	return last
}

func (o *observer) errors() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.errs...)
}
