// Package metrics is flannelu's one metrics surface: a Registry per
// process, handed to the constructor of every part that counts (through
// its Options or Config, as tailscale hands its registry around), and one
// writer of the Prometheus text format behind /metrics.
//
// Adding a metric is one line at construction time:
//
//	c := reg.Counter("flannelu_x_total", "What is counted.")              // then c.Inc(), c.Add(n)
//	v := reg.CounterVec("flannelu_y_total", "What, by reason.", "reason") // then v.With("bad_json").Inc()
//	v.Func(readDrops, "rx_overflow")                                      // a labelled series read at scrape
//	reg.CounterFunc("flannelu_z_total", "Kept elsewhere.", readCount)     // func() uint64, read at scrape
//	g := reg.Gauge("flannelu_peers", "Peers known.")                      // then g.Set(3), g.Add(-1)
//	reg.GaugeFunc("flannelu_w", "Read at each scrape.", readLevel)        // func() float64
//
// Rules the Registry enforces (a violation panics, as registrations run at
// start-up and any test that builds the part finds it): names are valid
// Prometheus names and counters end in _total; every family has help
// text; a name registered twice must agree in help, type and labels.
// Registering the same Counter name (or the same CounterVec labels) twice
// returns the same Counter, so several instances of a part (the udp
// backend's sockets) count into one series. A func series can be
// registered once. Funcs run at scrape time under the registry's lock:
// they must be cheap and must not call the Registry.
//
// Counting is lock-free and allocation-free: Counter.Add is one atomic add
// on a counter that has its cache line to itself, so it may sit on the
// packet path. With takes a lock; call it at set-up and keep the *Counter.
// A nil *Registry hands out working counters that are exported nowhere,
// for tests and tools that build parts without a daemon.
//
// The exposition lists families sorted by name, each with its HELP and
// TYPE lines, and series sorted by label values; label values and help
// are escaped as the format requires, and a family with no series yet is
// left out. `promtool check metrics` accepts it (tested in e2e).
//
// # Why not client_golang
//
// Measured on the daemon (go1.26.8, linux/amd64, 2 shared cores), the same
// API backed by github.com/prometheus/client_golang v1.25.0 with promhttp
// made bin/flannelu 1.17 MB larger (28.08 MB against 26.91 MB; this
// package adds 60 kB to the 26.85 MB before it). With k8s.io/client-go
// v0.37.2 linked, as the Kubernetes store will, the difference stays
// 1.15 MB (62.54 against 61.39 MB): client-go does not link client_golang,
// which is in go.mod only because etcd's modules require it. A scrape of
// a registry shaped like the udp daemon's (29 series) took 446
// allocations (53 kB) and 180-480 µs with client_golang, 0 allocations and
// 12-17 µs here; an increment is one atomic add and allocates nothing
// either way. For some 300 lines, the hand-written writer stays.
package metrics
