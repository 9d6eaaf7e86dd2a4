package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/subnet"
	"github.com/flannelu/flannelu/subnet/kube"
)

func envOf(kv map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := kv[k]; return v, ok }
}

func TestDefaultsAreFlanneld(t *testing.T) {
	o, err := ParseOptions(nil, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"etcd-endpoints", o.etcdEndpoints, "http://127.0.0.1:4001,http://127.0.0.1:2379"},
		{"etcd-prefix", o.etcdPrefix, "/coreos.com/network"},
		{"subnet-file", o.subnetFile, "/run/flannel/subnet.env"},
		{"subnet-lease-renew-margin", o.renewMargin, 60},
		{"ip-masq", o.ipMasq, false},
		{"iptables-forward-rules", o.iptablesForwardRules, true},
		{"healthz-ip", o.healthzIP, "0.0.0.0"},
		{"healthz-port", o.healthzPort, 0},
		{"subnet-lease-ttl", o.leaseTTL, 24 * time.Hour},
		{"udp-offload", o.udpOffload, true},
		{"kube-subnet-mgr", o.kubeSubnetMgr, false},
		{"kube-api-url", o.kubeAPIURL, ""},
		{"kubeconfig-file", o.kubeconfigFile, ""},
		{"kube-annotation-prefix", o.kubeAnnotationPrefix, "flannel.alpha.coreos.com"},
		{"net-config-path", o.netConfigPath, "/etc/kube-flannel/net-conf.json"},
		{"set-node-network-unavailable", o.setNodeNetworkUnavailable, true},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("--%s default %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestEnvironmentFillsUnsetFlagsAndCommandLineWins(t *testing.T) {
	env := envOf(map[string]string{
		"FLANNELD_ETCD_ENDPOINTS": "http://192.0.2.9:2379",
		"FLANNELD_ETCD_PREFIX":    "/from/env",
		"FLANNELD_IFACE":          "eth1,192.0.2.5",
		"FLANNELD_IP_MASQ":        "true",
	})
	o, err := ParseOptions([]string{"--etcd-prefix", "/from/flag"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.etcdEndpoints != "http://192.0.2.9:2379" {
		t.Errorf("etcd endpoints %q, want the environment's", o.etcdEndpoints)
	}
	if o.etcdPrefix != "/from/flag" {
		t.Errorf("etcd prefix %q, want the command line's", o.etcdPrefix)
	}
	if got := strings.Join(o.ifaces, " "); got != "eth1 192.0.2.5" {
		t.Errorf("ifaces %q, want both entries of FLANNELD_IFACE", got)
	}
	if !o.ipMasq {
		t.Error("FLANNELD_IP_MASQ=true was not applied")
	}
}

func TestBadFlagsGetAClearError(t *testing.T) {
	cases := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--subnet-lease-renew-margin", "0"}, nil, "--subnet-lease-renew-margin 0: must be between 1 and 1439"},
		{[]string{"--subnet-lease-renew-margin", "1440"}, nil, "between 1 and 1439"},
		{[]string{"--healthz-port", "70000"}, nil, "--healthz-port 70000"},
		{[]string{"--public-ip", "198.51.100.300"}, nil, `--public-ip "198.51.100.300": not an IPv4 address`},
		{[]string{"--log-level", "loud"}, nil, `--log-level "loud"`},
		{[]string{"--kube-annotation-prefix", "a/b/c"}, nil, "--kube-annotation-prefix: annotation prefix \"a/b/c\": at most one slash"},
		{nil, map[string]string{"FLANNELD_KUBE_ANNOTATION_PREFIX": "nodots"}, "--kube-annotation-prefix: annotation prefix \"nodots/\": must be a domain name"},
		{[]string{"--udp-workers", "100"}, nil, "--udp-workers 100"},
		{[]string{"--udp-busy-poll", "2ms"}, nil, "--udp-busy-poll 2ms: must be between 0 and 1ms"},
		{[]string{"--udp-busy-poll", "-1us"}, nil, "--udp-busy-poll -1µs"},
		{nil, map[string]string{"FLANNELD_HEALTHZ_PORT": "many"}, `FLANNELD_HEALTHZ_PORT="many"`},
		{[]string{"extra"}, nil, `unexpected argument "extra"`},
	}
	for _, c := range cases {
		_, err := ParseOptions(c.args, envOf(c.env), io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v %v: error %v, want one containing %q", c.args, c.env, err, c.want)
		}
	}
}

func TestKubernetesFlagsAndTheirEnvironmentForms(t *testing.T) {
	env := envOf(map[string]string{
		"FLANNELD_KUBE_SUBNET_MGR":              "true",
		"FLANNELD_KUBE_API_URL":                 "https://192.0.2.1:6443",
		"FLANNELD_KUBECONFIG_FILE":              "/etc/kubeconfig",
		"FLANNELD_NET_CONFIG_PATH":              "/from/env.json",
		"FLANNELD_SET_NODE_NETWORK_UNAVAILABLE": "false",
	})
	o, err := ParseOptions([]string{"--net-config-path", "/from/flag.json", "--kube-annotation-prefix", "example.com/net"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintf("%v %s %s %s %v %s", o.kubeSubnetMgr, o.kubeAPIURL, o.kubeconfigFile, o.netConfigPath, o.setNodeNetworkUnavailable, o.kubeAnnotationPrefix)
	if want := "true https://192.0.2.1:6443 /etc/kubeconfig /from/flag.json false example.com/net"; got != want {
		t.Fatalf("options %s, want %s", got, want)
	}
}

func TestUnknownBackendIsAnErrorAtStartup(t *testing.T) {
	cfg := &subnet.Config{BackendType: "gre", Network: netip.MustParsePrefix("198.18.0.0/16")}
	o, _ := ParseOptions(nil, envOf(nil), io.Discard)
	_, err := newBackend(cfg, &backend.ExternalInterface{}, o, nil, discardLogger(), nil)
	if err == nil || !strings.Contains(err.Error(), `backend type "gre"`) || !strings.Contains(err.Error(), "udp, vxlan, host-gw") {
		t.Fatalf("error %v, want one naming gre and the supported types", err)
	}
}

func TestVersionFlag(t *testing.T) {
	o, err := ParseOptions([]string{"--version"}, envOf(nil), io.Discard)
	if err != nil || !o.version {
		t.Fatalf("--version: %v, %v", o, err)
	}
}

func TestEnvName(t *testing.T) {
	if got := envName("subnet-lease-renew-margin"); got != "FLANNELD_SUBNET_LEASE_RENEW_MARGIN" {
		t.Fatalf("envName = %s", got)
	}
}

func TestPublicIPv6Flag(t *testing.T) {
	o, err := ParseOptions(nil, envOf(map[string]string{"FLANNELD_PUBLIC_IPV6": "2001:db8:0:1::7"}), io.Discard)
	if err != nil || o.publicIPv6 != "2001:db8:0:1::7" {
		t.Fatalf("FLANNELD_PUBLIC_IPV6: %q, %v", o.publicIPv6, err)
	}
	for value, want := range map[string]string{
		"192.0.2.1":        `--public-ipv6 "192.0.2.1": not an IPv6 address`,
		"::ffff:192.0.2.1": "not an IPv6 address",
		"2001:db8::zz":     "not an IPv6 address",
		"fe80::1":          "--public-ipv6: fe80::1 is a link-local address",
		"::1":              "loopback",
		"ff02::1":          "multicast",
		"::":               "unspecified",
	} {
		_, err := ParseOptions([]string{"--public-ipv6", value}, envOf(nil), io.Discard)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--public-ipv6 %s: %v, want an error with %q", value, err, want)
		}
	}
}

// TestUDPCarriesIPv6Only: the udp backend takes an IPv6-only network (it
// refused one before it carried IPv6) and publishes only the IPv6 public
// address.
func TestUDPCarriesIPv6Only(t *testing.T) {
	cfg, err := subnet.ParseConfig([]byte(`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:100::/48","Backend":{"Type":"udp"}}`))
	if err != nil {
		t.Fatal(err)
	}
	o, _ := ParseOptions(nil, envOf(nil), io.Discard)
	v6 := netip.MustParseAddr("2001:db8:0:1::1")
	ext := &backend.ExternalInterface{Iface: &net.Interface{Name: "eth0", MTU: 1500}, IfaceV6Addr: v6, ExtV6Addr: v6}
	be, err := newBackend(cfg, ext, o, nil, discardLogger(), nil)
	if err != nil {
		t.Fatalf("udp with an IPv6-only network: %v", err)
	}
	attrs, err := be.Init(context.Background())
	if err != nil || attrs.PublicIP.IsValid() || attrs.PublicIPv6 != v6 || be.MTU() != 1452 {
		t.Fatalf("lease attributes %+v, %v; MTU %d (want 1500 - 48)", attrs, err, be.MTU())
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestFlanneldV028Flags: the flags flanneld v0.28 added are taken, glog's
// -v sets the level (klog's V(n) is slog's -n), and what flannelu honours
// only in part is said in a warning.
func TestFlanneldV028Flags(t *testing.T) {
	o, err := ParseOptions([]string{"--iface-can-reach", "192.0.2.9", "--ip-blackhole-route", "--ip-masq-fully-random-disable",
		"-v", "4", "-vmodule", "store=6", "-log_backtrace_at", "main.go:10"}, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.ifaceCanReach != "192.0.2.9" || !o.blackholeRoute || !o.ipMasqRandomFullyDisable {
		t.Errorf("options %+v", o)
	}
	if o.Level() != slog.LevelDebug {
		t.Errorf("-v 4: level %v, want DEBUG", o.Level())
	}
	if w := strings.Join(o.Warnings(), "\n"); !strings.Contains(w, "-vmodule") || !strings.Contains(w, "-log_backtrace_at") {
		t.Errorf("warnings %q, want -vmodule's and -log_backtrace_at's", w)
	}
	for args, want := range map[string]slog.Level{"": slog.LevelInfo, "-v=2": -2, "-v=2 --log-level=debug": slog.LevelDebug, "-v=1 --log-level=error": -1} {
		o, err := ParseOptions(strings.Fields(args), envOf(nil), io.Discard)
		if err != nil || o.Level() != want {
			t.Errorf("%q: level %v (%v), want %v", args, o.Level(), err, want)
		}
	}
	if _, err := ParseOptions([]string{"-v", "loud"}, envOf(nil), io.Discard); err == nil {
		t.Error("-v loud: no error")
	}
}

// TestEnvironmentAsFlanneldReadsIt: flanneld (coreos/pkg flagutil) skips
// an empty FLANNELD_* and sets each other as one value; flannelu splits
// FLANNELD_IFACE alone at commas. EVENT_QUEUE_DEPTH and
// CONT_WHEN_CACHE_NOT_READY are read in Kubernetes mode as flanneld does.
func TestEnvironmentAsFlanneldReadsIt(t *testing.T) {
	o, err := ParseOptions(nil, envOf(map[string]string{
		"FLANNELD_HEALTHZ_PORT":       "",
		"FLANNELD_IP_MASQ":            "",
		"FLANNELD_PUBLIC_IP":          " ",
		"FLANNELD_IFACE_REGEX":        "^eth{0,1}$",
		"FLANNELD_IFACE_CAN_REACH":    "198.51.100.7",
		"FLANNELD_IP_BLACKHOLE_ROUTE": "true",
		"FLANNELD_V":                  "2",
		"FLANNELD_KUBE_SUBNET_MGR":    "true",
		"EVENT_QUEUE_DEPTH":           "100",
		"CONT_WHEN_CACHE_NOT_READY":   "true",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.healthzPort != 0 || o.ipMasq || o.publicIP != "" {
		t.Errorf("empty variables were applied: %+v", o)
	}
	if got := strings.Join(o.ifaceRegexes, " | "); got != "^eth{0,1}$" || o.ifaceCanReach != "198.51.100.7" || !o.blackholeRoute || o.Level() != -2 {
		t.Errorf("regexes %q, can-reach %q, blackhole %v, level %v", got, o.ifaceCanReach, o.blackholeRoute, o.Level())
	}
	if !o.contWhenCacheNotReady || !strings.Contains(strings.Join(o.Warnings(), "\n"), "EVENT_QUEUE_DEPTH=100 is not used") {
		t.Errorf("CONT_WHEN_CACHE_NOT_READY %v, warnings %q", o.contWhenCacheNotReady, o.Warnings())
	}
	// The manifest's 5000 is flanneld's default: nothing to say.
	if o, err := ParseOptions([]string{"--kube-subnet-mgr"}, envOf(map[string]string{"EVENT_QUEUE_DEPTH": "5000"}), io.Discard); err != nil || len(o.Warnings()) != 0 {
		t.Errorf("EVENT_QUEUE_DEPTH=5000: %v, %q", err, o.Warnings())
	}
	// flanneld's own check of EVENT_QUEUE_DEPTH, in Kubernetes mode only.
	bad := map[string]string{"EVENT_QUEUE_DEPTH": "lots"}
	if _, err := ParseOptions([]string{"--kube-subnet-mgr"}, envOf(bad), io.Discard); err == nil || !strings.Contains(err.Error(), "EVENT_QUEUE_DEPTH=lots format error") {
		t.Errorf("EVENT_QUEUE_DEPTH=lots in Kubernetes mode: %v", err)
	}
	if o, err := ParseOptions(nil, envOf(bad), io.Discard); err != nil || len(o.Warnings()) != 0 {
		t.Errorf("EVENT_QUEUE_DEPTH with etcd: %v, %q; flanneld does not read it there", err, o.Warnings())
	}
}

// TestNodeSyncTimeout: a node informer that cannot sync (no API server
// answers) stops the start after the timeout, as flanneld's does, unless
// CONT_WHEN_CACHE_NOT_READY=true.
func TestNodeSyncTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now
	cfg, err := kube.RESTConfig(url, "")
	if err != nil {
		t.Fatal(err)
	}
	client, err := kube.NewClient(cfg, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := kube.New(ctx, client, kube.Options{NodeName: "n1", NetConfPath: "/nonexistent", Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := waitNodeSync(ctx, s, 200*time.Millisecond, false, discardLogger()); err == nil || !strings.Contains(err.Error(), "CONT_WHEN_CACHE_NOT_READY") {
		t.Errorf("not synced, CONT_WHEN_CACHE_NOT_READY unset: %v", err)
	}
	if err := waitNodeSync(ctx, s, 200*time.Millisecond, true, discardLogger()); err != nil {
		t.Errorf("not synced, CONT_WHEN_CACHE_NOT_READY=true: %v", err)
	}
}
