package daemon

import (
	"io"
	"log/slog"
	"slices"
)

// backendOption is one of flannelu's options that only some backends read.
type backendOption struct {
	flag     string
	backends []string
	value    func(*Options) any
}

var udpOnly = []string{"udp"}

// forwarder: the userspace forwarder's options, read by udp and by ipip's
// userspace path (which runs one worker, so not --udp-workers).
var forwarder = []string{"udp", "ipip"}

var backendOptions = []backendOption{
	{"trace", forwarder, func(o *Options) any { return o.trace }},
	{"trace-pcap", forwarder, func(o *Options) any { return o.tracePcap }},
	{"trace-rate", forwarder, func(o *Options) any { return o.traceRate }},
	{"udp-workers", udpOnly, func(o *Options) any { return o.udpWorkers }},
	{"udp-busy-poll", forwarder, func(o *Options) any { return o.udpBusyPoll }},
	{"udp-offload", forwarder, func(o *Options) any { return o.udpOffload }},
	{"udp-foreign-sources", forwarder, func(o *Options) any { return o.udpForeignSources }},
	{"reconcile-interval", []string{"vxlan", "host-gw", "ipip"}, func(o *Options) any { return o.reconcileInterval }},
}

// unusedOptions are the options set away from their defaults (on the
// command line or through FLANNELD_*) that the backend does not read.
func unusedOptions(o *Options, backendType string) []backendOption {
	defaults := &Options{}
	newFlagSet(defaults, io.Discard)
	var unused []backendOption
	for _, opt := range backendOptions {
		if !slices.Contains(opt.backends, backendType) && opt.value(o) != opt.value(defaults) {
			unused = append(unused, opt)
		}
	}
	return unused
}

// warnUnusedOptions logs one warning per option that does nothing with the
// backend the network config names. A warning, not a refusal: one
// DaemonSet or unit file serves clusters of several backends, and the
// backend comes from the store, where an operator may change it between
// restarts; refusing would turn that change into every node failing to
// start, with the network down, over an option that is harmless to ignore.
func warnUnusedOptions(o *Options, backendType string, log *slog.Logger) {
	for _, opt := range unusedOptions(o, backendType) {
		log.Warn("option ignored: the network config's backend does not use it",
			"option", "--"+opt.flag, "backend", backendType, "used_by", opt.backends)
	}
}
