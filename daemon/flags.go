package daemon

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/flannelu/flannelu/handover"
	"github.com/flannelu/flannelu/internal/poller"
	"github.com/flannelu/flannelu/subnet"
	"github.com/flannelu/flannelu/subnet/kube"
)

// options are flanneld's flags with flanneld's defaults, plus flannelu's
// own (marked "flannelu:" in their usage text).
type Options struct {
	etcdEndpoints string
	etcdPrefix    string
	etcdKeyfile   string
	etcdCertfile  string
	etcdCAFile    string
	etcdUsername  string
	etcdPassword  string

	ifaces        listFlag
	ifaceRegexes  listFlag
	ifaceCanReach string
	publicIP      string
	publicIPv6    string
	subnetFile    string
	renewMargin   int // minutes, as flanneld's --subnet-lease-renew-margin

	ipMasq                   bool
	ipMasqRandomFullyDisable bool
	blackholeRoute           bool
	iptablesForwardRules     bool
	iptablesResync           int
	healthzIP                string
	healthzPort              int
	kubeSubnetMgr            bool
	version                  bool

	// Kubernetes mode (--kube-subnet-mgr)
	kubeAPIURL                string
	kubeconfigFile            string
	kubeAnnotationPrefix      string
	netConfigPath             string
	setNodeNetworkUnavailable bool

	// glog's flags as flanneld copies them from klog: what was set, for
	// the log level and the warnings; klog itself holds the values.
	glogV, glogVModule, glogBacktraceAt string

	// flanneld's environment beyond FLANNELD_*, read in Kubernetes mode
	eventQueueDepth       string // EVENT_QUEUE_DEPTH
	contWhenCacheNotReady bool   // CONT_WHEN_CACHE_NOT_READY=true

	// flannelu's own
	peerFilter        bool
	leaseTTL          time.Duration
	reconcileInterval time.Duration
	trace             bool
	tracePcap         string
	traceRate         int
	logLevel          string
	udpWorkers        int
	udpBusyPoll       time.Duration
	udpOffload        bool
	udpForeignSources bool
	cpuProfile        string
	handOverSocket    string
	handOverTimeout   time.Duration
	afterHandOver     string
}

// listFlag is a repeatable flag; a value from the environment may hold
// several entries separated by commas.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}

func newFlagSet(o *Options, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("flannelu", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.etcdEndpoints, "etcd-endpoints", "http://127.0.0.1:4001,http://127.0.0.1:2379", "a comma-delimited list of etcd endpoints")
	fs.StringVar(&o.etcdPrefix, "etcd-prefix", "/coreos.com/network", "etcd prefix")
	fs.StringVar(&o.etcdKeyfile, "etcd-keyfile", "", "SSL key file used to secure etcd communication")
	fs.StringVar(&o.etcdCertfile, "etcd-certfile", "", "SSL certification file used to secure etcd communication")
	fs.StringVar(&o.etcdCAFile, "etcd-cafile", "", "SSL Certificate Authority file used to secure etcd communication")
	fs.StringVar(&o.etcdUsername, "etcd-username", "", "username for BasicAuth to etcd")
	fs.StringVar(&o.etcdPassword, "etcd-password", "", "password for BasicAuth to etcd")
	fs.Var(&o.ifaces, "iface", "interface to use (IP or name) for inter-host communication; repeatable, the first match wins")
	fs.Var(&o.ifaceRegexes, "iface-regex", "regex of the interface name or IP to use for inter-host communication; repeatable, tried after every --iface")
	fs.StringVar(&o.ifaceCanReach, "iface-can-reach", "", "the interface (and source address) of the route to this IP, as 'ip route get <ip>' shows it; tried after every --iface and --iface-regex")
	fs.StringVar(&o.publicIP, "public-ip", "", "IP accessible by other nodes for inter-host communication")
	fs.StringVar(&o.publicIPv6, "public-ipv6", "", "IPv6 accessible by other nodes for inter-host communication")
	fs.StringVar(&o.subnetFile, "subnet-file", "/run/flannel/subnet.env", "filename where env variables (subnet, MTU, ...) will be written to")
	fs.IntVar(&o.renewMargin, "subnet-lease-renew-margin", 60, "subnet lease renewal margin, in minutes, ranging from 1 to 1439")
	fs.BoolVar(&o.ipMasq, "ip-masq", false, "setup IP masquerade rule for traffic destined outside of overlay network")
	fs.BoolVar(&o.ipMasqRandomFullyDisable, "ip-masq-fully-random-disable", false, "disable fully-random mode for MASQUERADE (on by default where iptables or nftables has it)")
	fs.BoolVar(&o.blackholeRoute, "ip-blackhole-route", false, "add a blackhole route for this host's subnet (kept every --iptables-resync), for setups without the bridge plugin (e.g. Canal)")
	fs.BoolVar(&o.iptablesForwardRules, "iptables-forward-rules", true, "add default accept rules to FORWARD chain in iptables")
	fs.IntVar(&o.iptablesResync, "iptables-resync", 5, "resync period for iptables rules, in seconds (nftables rules and --ip-blackhole-route too)")
	fs.StringVar(&o.healthzIP, "healthz-ip", "0.0.0.0", "the IP address for healthz server to listen")
	fs.IntVar(&o.healthzPort, "healthz-port", 0, "the port for healthz server to listen (0 to disable); flannelu also serves /metrics there")
	fs.BoolVar(&o.kubeSubnetMgr, "kube-subnet-mgr", false, "contact the Kubernetes API for subnet assignment instead of etcd")
	fs.StringVar(&o.kubeAPIURL, "kube-api-url", "", "Kubernetes API server URL; with neither this nor --kubeconfig-file, the in-cluster config")
	fs.StringVar(&o.kubeconfigFile, "kubeconfig-file", "", "kubeconfig file location; with neither this nor --kube-api-url, the in-cluster config")
	fs.StringVar(&o.kubeAnnotationPrefix, "kube-annotation-prefix", kube.DefaultPrefix, "Kubernetes annotation prefix; can contain a single slash \"/\", otherwise it is appended at the end")
	fs.StringVar(&o.netConfigPath, "net-config-path", "/etc/kube-flannel/net-conf.json", "path to the network configuration file (Kubernetes mode)")
	fs.BoolVar(&o.setNodeNetworkUnavailable, "set-node-network-unavailable", true, "set the node's NetworkUnavailable condition to False once the network runs (Kubernetes mode)")
	fs.BoolVar(&o.version, "version", false, "print version and exit")
	addGlogFlags(fs)

	fs.BoolVar(&o.peerFilter, "iptables-peer-filter", false, "flannelu: drop UDP to the backend's port (udp, vxlan) unless it comes from a current peer's public IP (INPUT chain FLANNELU-PEERS in iptables, and ip6tables on an IPv6 network; flannel's wire cannot be authenticated, see docs/security.md)")
	fs.DurationVar(&o.leaseTTL, "subnet-lease-ttl", 24*time.Hour, "flannelu: TTL of the etcd lease behind the subnet (flanneld: fixed 24h)")
	fs.DurationVar(&o.reconcileInterval, "reconcile-interval", 10*time.Second, "flannelu: how often the vxlan and host-gw backends restore kernel state")
	fs.BoolVar(&o.trace, "trace", false, "flannelu: print one line per forwarded or dropped packet (udp backend, rate-limited)")
	fs.StringVar(&o.tracePcap, "trace-pcap", "", "flannelu: also write traced packets to this pcap file (udp backend)")
	fs.IntVar(&o.traceRate, "trace-rate", 100, "flannelu: at most this many trace lines per second")
	fs.StringVar(&o.logLevel, "log-level", "info", "flannelu: debug, info, warn or error")
	fs.BoolVar(&o.udpOffload, "udp-offload", true, "flannelu: udp backend moves TCP/UDP super-packets through the TUN and UDP GSO/GRO (falls back where the kernel refuses)")
	fs.BoolVar(&o.udpForeignSources, "udp-foreign-sources", false, "flannelu: udp backend also accepts from a peer inner sources outside the Network (a gateway host forwarding external traffic into the overlay unmasqueraded); by default a peer's packets must come from its own subnet, and overlay sources not the sender's are refused either way")
	fs.StringVar(&o.cpuProfile, "cpu-profile", "", "flannelu: write a Go CPU profile to this file until exit (debugging)")
	fs.StringVar(&o.handOverSocket, "handover-socket", "", "flannelu: Unix socket on which a flannelu started later on this host takes over from this one without a lost packet (upgrades; see docs/upgrades.md): \"@name\" an abstract socket (the default, @flannelu followed by --subnet-file's path: one per network namespace and subnet file), a path a socket file, \"none\" to disable")
	fs.DurationVar(&o.handOverTimeout, "handover-timeout", handover.DefaultTimeout, "flannelu: how long a successor may take from receiving this process's state to saying it forwards; one that does not is cut off and this process carries on")
	fs.StringVar(&o.afterHandOver, "after-handover", afterHandOverExit, "flannelu: what a flannelu does once a successor took over: exit (status 0), or wait, serving /healthz, until a signal stops it (a Kubernetes pod, whose container would be restarted)")
	fs.DurationVar(&o.udpBusyPoll, "udp-busy-poll", 0, "flannelu: udp backend checks for the next packet without sleeping for this long after each one, yielding the CPU between checks (at most 1ms; 0: off): CPU time for lower latency where waking an idle CPU is slow, e.g. virtual machines (see BENCHMARKS.md)")
	fs.IntVar(&o.udpWorkers, "udp-workers", 0, "flannelu: forwarding workers of the udp backend, each a TUN queue and a socket (0: automatic, one; see BENCHMARKS.md)")
	return fs
}

// ParseOptions reads the command line, then fills every flag that was not
// given there from FLANNELD_<NAME> (flanneld's rule: the command line
// wins), then checks ranges.
func ParseOptions(args []string, env func(string) (string, bool), out io.Writer) (*Options, error) {
	o := &Options{}
	fs := newFlagSet(o, out)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		name := envName(f.Name)
		v, _ := env(name)
		if strings.TrimSpace(v) == "" {
			return // flanneld skips an empty variable
		}
		values := []string{v}
		if f.Name == "iface" {
			// flannelu's kindness: FLANNELD_IFACE=eth1,eth0 is two
			// entries (flanneld looks for one interface of that name).
			// A regex may hold commas, so FLANNELD_IFACE_REGEX is one.
			values = strings.Split(v, ",")
		}
		for _, v := range values {
			if err := fs.Set(f.Name, strings.TrimSpace(v)); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", name, v, err))
			}
		}
	})
	readGlogFlags(fs, o)
	o.eventQueueDepth, _ = env("EVENT_QUEUE_DEPTH")
	contWhen, _ := env("CONT_WHEN_CACHE_NOT_READY")
	o.contWhenCacheNotReady = contWhen == "true" // flanneld's test, exactly
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return o, o.validate()
}

// envName maps a flag to flanneld's environment variable: etcd-endpoints
// becomes FLANNELD_ETCD_ENDPOINTS.
func envName(flagName string) string {
	return "FLANNELD_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func (o *Options) validate() error {
	switch {
	case o.renewMargin < 1 || o.renewMargin >= 24*60:
		return fmt.Errorf("--subnet-lease-renew-margin %d: must be between 1 and 1439 minutes", o.renewMargin)
	case o.healthzPort < 0 || o.healthzPort > 65535:
		return fmt.Errorf("--healthz-port %d: must be between 0 and 65535", o.healthzPort)
	case o.iptablesResync < 1:
		return fmt.Errorf("--iptables-resync %d: must be at least 1 second", o.iptablesResync)
	case o.leaseTTL < 2*time.Second:
		return fmt.Errorf("--subnet-lease-ttl %v: must be at least 2s", o.leaseTTL)
	case o.reconcileInterval < 100*time.Millisecond:
		return fmt.Errorf("--reconcile-interval %v: must be at least 100ms", o.reconcileInterval)
	case o.traceRate < 1:
		return fmt.Errorf("--trace-rate %d: must be at least 1 line per second", o.traceRate)
	case o.handOverTimeout < time.Second:
		return fmt.Errorf("--handover-timeout %v: must be at least 1s", o.handOverTimeout)
	case o.afterHandOver != afterHandOverExit && o.afterHandOver != afterHandOverWait:
		return fmt.Errorf("--after-handover %q: must be exit or wait", o.afterHandOver)
	case o.udpWorkers < 0 || o.udpWorkers > 64:
		return fmt.Errorf("--udp-workers %d: must be between 0 and 64", o.udpWorkers)
	case o.udpBusyPoll < 0 || o.udpBusyPoll > poller.MaxBusyPoll:
		return fmt.Errorf("--udp-busy-poll %v: must be between 0 and %v", o.udpBusyPoll, poller.MaxBusyPoll)
	}
	if _, err := kube.NewAnnotations(o.kubeAnnotationPrefix); err != nil {
		return fmt.Errorf("--kube-annotation-prefix: %w", err)
	}
	if o.publicIP != "" {
		a, err := netip.ParseAddr(o.publicIP)
		if err != nil || !a.Is4() {
			return fmt.Errorf("--public-ip %q: not an IPv4 address", o.publicIP)
		}
		if err := subnet.UsableUnicast(a); err != nil {
			return fmt.Errorf("--public-ip %s: %w; give the address the other hosts reach this one on", o.publicIP, err)
		}
	}
	if o.publicIPv6 != "" {
		a, err := netip.ParseAddr(o.publicIPv6)
		if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
			return fmt.Errorf("--public-ipv6 %q: not an IPv6 address", o.publicIPv6)
		}
		if err := subnet.UsableUnicast(a); err != nil {
			return fmt.Errorf("--public-ipv6: %w", err)
		}
	}
	if _, err := parseLogLevel(o.logLevel); err != nil {
		return err
	}
	if o.kubeSubnetMgr && o.eventQueueDepth != "" {
		// flanneld's check: a malformed depth stops it in Kubernetes mode.
		if _, err := strconv.Atoi(o.eventQueueDepth); err != nil {
			return fmt.Errorf("env EVENT_QUEUE_DEPTH=%s format error: %w", o.eventQueueDepth, err)
		}
	}
	if (o.etcdKeyfile == "") != (o.etcdCertfile == "") {
		return errors.New("--etcd-keyfile and --etcd-certfile must be given together")
	}
	return nil
}

// Version says whether --version asked for the version alone.
func (o *Options) Version() bool { return o.version }

// CPUProfile is --cpu-profile: where to write a Go CPU profile, or "".
func (o *Options) CPUProfile() string { return o.cpuProfile }

func parseLogLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return 0, fmt.Errorf("--log-level %q: must be debug, info, warn or error", s)
	}
	return l, nil
}
