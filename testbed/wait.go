package testbed

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"runtime"
	"time"
)

// The waits in this file end on an event (a log line, a parked goroutine)
// or fail at a deadline; the deadline is generous because only a failure
// runs into it, and CI machines are loaded. Eventually (cluster.go) is the
// general form.

// WaitLog waits until the process's output (its log: stdout and stderr)
// matches re, for a line such as tcpdump's "listening on" that says the
// process is ready. It fails at once when the process exits without
// having written it.
func (p *Proc) WaitLog(re *regexp.Regexp, timeout time.Duration) error {
	return p.WaitOutput(timeout, fmt.Sprintf("a line matching %q", re), re.Match)
}

// WaitOutput waits until cond holds for the process's output so far,
// which is described as what in the error. It fails at once when the
// process exits without cond having held.
func (p *Proc) WaitOutput(timeout time.Duration, what string, cond func(log []byte) bool) error {
	deadline := time.Now().Add(timeout)
	for {
		exited := p.Exited() // before reading: its output is complete then
		if b, _ := os.ReadFile(p.Log); cond(b) {
			return nil
		}
		if exited {
			return fmt.Errorf("%s exited without writing %s:%s", p.Cmd.Path, what, Tail(p.Log, 10))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s wrote no %s in %v:%s", p.Cmd.Path, what, timeout, Tail(p.Log, 10))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitParked waits until a goroutine of this process whose stack trace
// mentions fn (a function it is in, or the one whose go statement started
// it, as a trace prints them: "tun.TestCloseUnblocksRead") is parked in
// the network poller: blocked in a read that only data or a Close ends.
// A test of "Close unblocks a blocked read" waits for this before it
// closes, so that the read it unblocks was really blocked.
func WaitParked(fn string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		for _, g := range bytes.Split(buf[:n], []byte("\n\n")) {
			header, _, _ := bytes.Cut(g, []byte("\n"))
			if bytes.Contains(header, []byte("[IO wait")) && bytes.Contains(g, []byte(fn)) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no goroutine of %s parked in the poller within %v", fn, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
