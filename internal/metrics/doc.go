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
// The same API backed by github.com/prometheus/client_golang with promhttp
// made the binary larger (client-go does not link client_golang, which is
// in go.mod only because etcd's modules require it), and a scrape
// allocated hundreds of times and took an order of magnitude longer than
// this package's, which allocates nothing (BENCHMARKS.md, "Choices
// measured in the code"); an increment is one atomic add either way. For
// some 300 lines, the hand-written writer stays.
package metrics
