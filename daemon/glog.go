package daemon

import (
	"flag"
	"log/slog"
	"strconv"

	"k8s.io/klog/v2"
)

// flanneldEventQueueDepth is flanneld's default EVENT_QUEUE_DEPTH.
const flanneldEventQueueDepth = 5000

// glogFlags are glog's flags that flanneld copies from klog.
var glogFlags = []string{"v", "vmodule", "log_backtrace_at"}

// addGlogFlags adds -v, -vmodule and -log_backtrace_at as flanneld does:
// klog's own values (which the Kubernetes client logs with), with klog's
// parsing and usage text.
func addGlogFlags(fs *flag.FlagSet) {
	k := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(k)
	for _, name := range glogFlags {
		f := k.Lookup(name)
		fs.Var(f.Value, f.Name, f.Usage)
	}
}

// readGlogFlags keeps what was given to glog's flags (klog holds the
// values, shared by every flag set), for the log level and the warnings.
func readGlogFlags(fs *flag.FlagSet, o *Options) {
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "v":
			o.glogV = f.Value.String()
		case "vmodule":
			o.glogVModule = f.Value.String()
		case "log_backtrace_at":
			o.glogBacktraceAt = f.Value.String()
		}
	})
}

// Level is --log-level, or the level -v asks for when that is more
// verbose: klog's V(n) lines reach slog at level -n, so -v=2 shows the
// Kubernetes client's V(2) lines, and -v=4 (Kubernetes' "debug") also
// flannelu's debug lines.
func (o *Options) Level() slog.Level {
	l, _ := parseLogLevel(o.logLevel) // validated with the flags
	if v, err := strconv.Atoi(o.glogV); err == nil && v > 0 && slog.Level(-v) < l {
		l = slog.Level(-v)
	}
	return l
}

// Warnings are what flanneld takes and flannelu cannot honour in full,
// one line each, for the command to log once its logger exists.
func (o *Options) Warnings() []string {
	var w []string
	if o.glogVModule != "" {
		w = append(w, "-vmodule sets the verbosity of the Kubernetes client's log lines (klog) per file; flannelu's own lines follow -v and --log-level")
	}
	if o.glogBacktraceAt != "" {
		w = append(w, "-log_backtrace_at applies to the Kubernetes client's log lines (klog) only; no flannelu line prints a stack trace")
	}
	// flanneld's default depth (a value of 0 or less means it too) needs
	// no word: flannelu's queue never drops an event either.
	if n, _ := strconv.Atoi(o.eventQueueDepth); o.kubeSubnetMgr && n > 0 && n != flanneldEventQueueDepth {
		w = append(w, "EVENT_QUEUE_DEPTH="+o.eventQueueDepth+" is not used: flannelu has no fixed-depth event queue to size; its node queue (client-go's workqueue) holds each changed node once, however many change")
	}
	return w
}
