package metrics

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"
)

// Registry is the process's set of metric families, written by WriteTo and
// ServeHTTP. Registering is for start-up and rare events (it takes a
// mutex); counting is done on the Counter or Gauge it returns. A nil
// *Registry is valid: it returns working Counters and Gauges that are
// exported nowhere, so tests and tools construct parts without one.
type Registry struct {
	mu       sync.Mutex
	families []*family // sorted by name: the exposition order
	byName   map[string]*family
	bufs     sync.Pool // *[]byte: one scrape's rendering
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{byName: map[string]*family{}}
}

type kind uint8

const (
	kindCounter kind = iota
	kindGauge
)

func (k kind) String() string {
	if k == kindGauge {
		return "gauge"
	}
	return "counter"
}

// family is one metric name with its HELP, TYPE and label names, and its
// series sorted by label values.
type family struct {
	name   string
	help   string
	kind   kind
	labels []string

	mu     sync.Mutex // guards series
	series []*series
}

// series is one sample line. Exactly one of its value sources is set.
type series struct {
	values  []string
	prefix  string // `name{label="value",...} `, rendered once
	counter *Counter
	gauge   *Gauge
	countFn func() uint64
	gaugeFn func() float64
}

// Counter registers (or returns the already registered) counter name. The
// name must end in _total. Parts that register the same name with the same
// help share one Counter: several sockets count into one family.
func (r *Registry) Counter(name, help string) *Counter {
	f := r.family(name, help, kindCounter, nil)
	return f.owned(nil, func(s *series) { s.counter = new(Counter) }).counter
}

// CounterFunc registers a counter whose value f returns at each scrape,
// for a count kept elsewhere (a kernel statistic, another package's
// atomic). f must be cheap, safe to call from any goroutine, and must not
// call the Registry.
func (r *Registry) CounterFunc(name, help string, f func() uint64) {
	r.family(name, help, kindCounter, nil).fn(nil, func(s *series) { s.countFn = f })
}

// Gauge registers (or returns the already registered) gauge name.
func (r *Registry) Gauge(name, help string) *Gauge {
	f := r.family(name, help, kindGauge, nil)
	return f.owned(nil, func(s *series) { s.gauge = new(Gauge) }).gauge
}

// GaugeFunc registers a gauge whose value f returns at each scrape; f
// follows CounterFunc's rules.
func (r *Registry) GaugeFunc(name, help string, f func() float64) {
	r.family(name, help, kindGauge, nil).fn(nil, func(s *series) { s.gaugeFn = f })
}

// CounterVec is a counter family with labels, for example
// flannelu_dropped_packets_total{direction,reason}.
type CounterVec struct{ f *family }

// CounterVec registers (or returns the already registered) labelled
// counter family name with the given label names.
func (r *Registry) CounterVec(name, help string, labels ...string) *CounterVec {
	if len(labels) == 0 {
		panic(fmt.Sprintf("metrics: %s: a CounterVec needs labels (use Counter)", name))
	}
	return &CounterVec{r.family(name, help, kindCounter, labels)}
}

// With returns the counter for the label values (one per label name, in
// order), creating it on first use. It takes a lock: call it once at
// set-up and keep the *Counter when the count is on a hot path.
func (v *CounterVec) With(values ...string) *Counter {
	return v.f.owned(values, func(s *series) { s.counter = new(Counter) }).counter
}

// Func adds the series with the given label values whose value f returns
// at each scrape (CounterFunc's rules apply to f).
func (v *CounterVec) Func(f func() uint64, values ...string) {
	v.f.fn(values, func(s *series) { s.countFn = f })
}

var (
	metricName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	labelName  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

// family returns the family name, registering it on first use. A name
// registered again must agree in help, type and labels: anything else is
// a programming error and panics, as at start-up every part registers.
func (r *Registry) family(name, help string, k kind, labels []string) *family {
	checkFamily(name, help, k, labels)
	f := &family{name: name, help: help, kind: k, labels: slices.Clone(labels)}
	if r == nil {
		return f
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.byName[name]; ok {
		if old.help != help || old.kind != k || !slices.Equal(old.labels, labels) {
			panic(fmt.Sprintf("metrics: %s registered twice with different help, type or labels", name))
		}
		return old
	}
	r.byName[name] = f
	i, _ := slices.BinarySearchFunc(r.families, name, func(f *family, n string) int { return strings.Compare(f.name, n) })
	r.families = slices.Insert(r.families, i, f)
	return f
}

func checkFamily(name, help string, k kind, labels []string) {
	switch {
	case !metricName.MatchString(name):
		panic(fmt.Sprintf("metrics: %q is not a metric name", name))
	case help == "":
		panic(fmt.Sprintf("metrics: %s has no help text", name))
	case k == kindCounter && !strings.HasSuffix(name, "_total"):
		panic(fmt.Sprintf("metrics: counter %s must end in _total", name))
	}
	for i, l := range labels {
		if !labelName.MatchString(l) || strings.HasPrefix(l, "__") || slices.Contains(labels[:i], l) {
			panic(fmt.Sprintf("metrics: %s: bad or repeated label name %q", name, l))
		}
	}
}

// owned returns the series for values holding its own Counter or Gauge,
// creating it with set on first use.
func (f *family) owned(values []string, set func(*series)) *series {
	values = validUTF8(values)
	f.mu.Lock()
	defer f.mu.Unlock()
	i, found := f.find(values)
	if found {
		s := f.series[i]
		if s.counter == nil && s.gauge == nil {
			panic(fmt.Sprintf("metrics: %s%s is read from a func, not counted", f.name, s.prefix[len(f.name):]))
		}
		return s
	}
	return f.insert(i, values, set)
}

// fn adds the series for values read from a func; it must be new.
func (f *family) fn(values []string, set func(*series)) {
	values = validUTF8(values)
	f.mu.Lock()
	defer f.mu.Unlock()
	i, found := f.find(values)
	if found {
		panic(fmt.Sprintf("metrics: %s%s registered twice", f.name, f.series[i].prefix[len(f.name):]))
	}
	f.insert(i, values, set)
}

// find is where the series with values is, or would go, in the sorted
// series.
func (f *family) find(values []string) (int, bool) {
	if len(values) != len(f.labels) {
		panic(fmt.Sprintf("metrics: %s has labels %v, got values %q", f.name, f.labels, values))
	}
	return slices.BinarySearchFunc(f.series, values, func(s *series, v []string) int { return slices.Compare(s.values, v) })
}

func (f *family) insert(i int, values []string, set func(*series)) *series {
	values = slices.Clone(values)
	s := &series{values: values, prefix: string(appendSeriesName(nil, f.name, f.labels, values))}
	set(s)
	f.series = slices.Insert(f.series, i, s)
	return s
}

// validUTF8 returns values with invalid UTF-8 replaced (the exposition
// format is UTF-8), unchanged when all are valid.
func validUTF8(values []string) []string {
	if !slices.ContainsFunc(values, func(v string) bool { return !utf8.ValidString(v) }) {
		return values
	}
	clean := make([]string, len(values))
	for i, v := range values {
		clean[i] = strings.ToValidUTF8(v, "\uFFFD")
	}
	return clean
}
