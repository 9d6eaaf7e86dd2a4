// Package poller waits for any of a few non-blocking descriptors to become
// ready, from one goroutine, the way flanneld's C
// proxy waits in poll(2) on its TUN and socket, and without Go's scheduler
// in the way while traffic flows.
//
// Measured on the udp path (BENCHMARKS.md, "Round-trip latency: flannelu
// vs flanneld"): a wait the scheduler knows about (Go's netpoller, or
// ppoll through unix.Syscall6) lets sysmon hand the thread's P to another
// thread at every sleep and costs 4-10 extra context switches per round
// trip; the same loop with the wait made as a raw system call, the thread
// keeping its P while it sleeps, was the fastest userspace forwarder in
// both layouts. A raw wait has two costs that the Poller bounds: the rest
// of the program runs on that P only when the waiting goroutine yields,
// and an idle process would keep a P busy and sysmon ticking. So the
// Poller waits raw while descriptors keep becoming ready, yields every
// millisecond when no P is left for the rest of the program and every
// 5 ms otherwise (before sysmon steps in), and after a quiet spell waits
// once through the scheduler, which costs nothing while the daemon is
// idle. A raw wait has no timeout, because a timer armed and cancelled at
// every wait cost 18 µs per round trip of a ping-pong here (BENCHMARKS.md,
// rounds four and five), and the runtime's own preemption signal (sysmon's
// after 10 ms on the P, or a garbage collection stopping the world) ends
// such a wait: it yields then, and turns cold once the descriptors have
// been quiet for the cold spell. With GODEBUG asyncpreemptoff=1 no signal
// comes, and every raw wait has a 1 ms timeout.
// Opt-in busy polling (SetBusyPoll) checks the descriptors without
// sleeping for a bounded window after each ready one.
//
// Linux only.
package poller
