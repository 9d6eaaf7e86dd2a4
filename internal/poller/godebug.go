package poller

import (
	"os"
	"strconv"
	"strings"
)

// preemptSignals reports whether the Go runtime interrupts a goroutine
// that keeps its P with a signal (asynchronous preemption): sysmon's
// after 10 ms, and a garbage collection's when it stops the world. A
// signal ends a raw ppoll with EINTR, and only then may a raw wait go
// without a timeout.
var preemptSignals = !asyncPreemptOff(os.Getenv("GODEBUG"))

// asyncPreemptOff reports whether a GODEBUG value turns the runtime's
// asynchronous preemption off (asyncpreemptoff=N, N not 0; the last
// setting wins).
func asyncPreemptOff(godebug string) bool {
	off := false
	for _, kv := range strings.Split(godebug, ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(kv), "asyncpreemptoff="); ok {
			n, err := strconv.Atoi(v)
			off = err == nil && n != 0
		}
	}
	return off
}
