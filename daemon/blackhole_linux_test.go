package daemon

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/flannelu/flannelu/subnet"
	"github.com/flannelu/flannelu/testbed"
)

// TestBlackholeRoute: --ip-blackhole-route adds flanneld's blackhole route
// for the lease's subnet once, and where the bridge's route to the subnet
// has its place says so once instead of failing every resync.
func TestBlackholeRoute(t *testing.T) {
	ns := testbed.Namespace(t, "blackhole")
	cfg, err := subnet.ParseConfig([]byte(`{"Network":"198.18.0.0/16"}`))
	if err != nil {
		t.Fatal(err)
	}
	o, _ := ParseOptions([]string{"--ip-blackhole-route", "--iptables-resync", "1"}, envOf(nil), nil)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	lease := subnet.Lease{Subnet: netip.MustParsePrefix("198.18.40.0/24")}
	k := blackholeRoutes(o, cfg, lease, log)
	ns.In(t, func() { k.ensure(k.subnets[0]); k.ensure(k.subnets[0]) })
	if got := ns.IP(t, "route", "show", "type", "blackhole"); got != "blackhole 198.18.40.0/24 \n" {
		t.Fatalf("blackhole routes %q, want flanneld's one", got)
	}

	// A host whose cni0 already routes its subnet.
	ns.IP(t, "route", "del", "blackhole", "198.18.40.0/24")
	ns.IP(t, "link", "add", "cni0", "type", "bridge")
	ns.IP(t, "addr", "add", "198.18.40.1/24", "dev", "cni0")
	ns.IP(t, "link", "set", "cni0", "up")
	ns.In(t, func() {
		for range 3 { // three resyncs
			k.ensure(k.subnets[0])
		}
	})
	if got := ns.IP(t, "route", "show", "type", "blackhole"); got != "" {
		t.Errorf("blackhole route beside cni0's: %q", got)
	}
	if n := strings.Count(logs.String(), "another route to this host's subnet"); n != 1 || strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("want the bridge's route said once and no error:\n%s", logs.String())
	}
}
