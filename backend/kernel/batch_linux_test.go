package kernel_test

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/backend/kernel"
	"github.com/flannelu/flannelu/testbed"
	"github.com/flannelu/flannelu/testbed/kerneltest"
)

// TestBatchWritesWhatHandleWrites programs 600 vxlan peers (neighbour,
// fdb entry, onlink route each, as the vxlan backend does) and 600
// host-gw routes through one Batch, more than one sendmsg's worth, and
// reads them back as iproute2 shows them; a write the kernel refuses is
// reported to its own callback and the others still go in.
func TestBatchWritesWhatHandleWrites(t *testing.T) {
	testbed.RequireRoot(t)
	ns := kerneltest.NewNamespace(t, "batch")
	far := kerneltest.NewNamespace(t, "far")
	kerneltest.Veth(t, ns, "ext0", "192.0.2.1/24", far, "ext0", "192.0.2.99/24")
	ns.IP(t, "link", "add", "flannel.1", "type", "vxlan", "id", "1", "dev", "ext0", "dstport", "8472", "nolearning")
	ns.IP(t, "link", "set", "flannel.1", "up")
	vx, err := ns.NL.LinkByName("flannel.1")
	if err != nil {
		t.Fatal(err)
	}
	ext, err := ns.NL.LinkByName("ext0")
	if err != nil {
		t.Fatal(err)
	}
	b, err := kernel.NewBatchAt(ns.NS)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	failed := map[string]error{}
	okCount := 0
	done := func(what string) func(error) {
		return func(err error) {
			if err != nil {
				failed[what] = err
				return
			}
			okCount++
		}
	}
	const peers = 600
	for i := range peers {
		sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i / 32), byte(i % 32 * 8)}), 29)
		mac := net.HardwareAddr{0x0e, 0, 0, byte(i >> 8), byte(i), 1}
		public := net.IPv4(192, 0, 2, byte(100+i%150))
		for _, err := range []error{
			b.NeighSet(&netlink.Neigh{LinkIndex: vx.Attrs().Index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
				Type: unix.RTN_UNICAST, IP: kernel.IP(sn.Addr()), HardwareAddr: mac}, done("neigh")),
			b.NeighSet(&netlink.Neigh{LinkIndex: vx.Attrs().Index, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
				Flags: netlink.NTF_SELF, IP: public, HardwareAddr: mac}, done("fdb")),
			b.RouteReplace(&netlink.Route{LinkIndex: vx.Attrs().Index, Dst: kernel.IPNet(sn), Gw: kernel.IP(sn.Addr()),
				Flags: int(netlink.FLAG_ONLINK)}, done("vxlan route")),
			b.RouteReplace(&netlink.Route{LinkIndex: ext.Attrs().Index, Dst: kernel.IPNet(netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(i / 32), byte(i % 32 * 8)}), 29)),
				Gw: public}, done("host-gw route")),
		} {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	// Off-link gateway: refused (ENETUNREACH), reported alone.
	if err := b.RouteReplace(&netlink.Route{LinkIndex: ext.Attrs().Index, Dst: kernel.IPNet(netip.MustParsePrefix("198.18.250.0/24")),
		Gw: net.IPv4(203, 0, 113, 9)}, done("off-link")); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	if okCount != 4*peers || len(failed) != 1 || failed["off-link"] == nil {
		t.Fatalf("%d writes answered ok, failures %v; want %d and the off-link route refused", okCount, failed, 4*peers)
	}
	routes := ns.IP(t, "route", "show", "dev", "flannel.1")
	if n := strings.Count(routes, "onlink"); n != peers || !strings.Contains(routes, "198.18.18.184/29 via 198.18.18.184 onlink") {
		t.Errorf("%d onlink routes on flannel.1, want %d:\n%.300s", n, peers, routes)
	}
	if got := strings.Count(ns.IP(t, "route", "show", "dev", "ext0", "proto", "boot"), "198.19."); got != peers {
		t.Errorf("%d routes via ext0, want %d", got, peers)
	}
	if got := strings.Count(ns.IP(t, "neigh", "show", "dev", "flannel.1", "nud", "permanent"), "PERMANENT"); got != peers {
		t.Errorf("%d permanent neighbours, want %d", got, peers)
	}
	fdb := kerneltest.Run(t, "bridge", "-n", ns.Name, "fdb", "show", "dev", "flannel.1")
	if got := strings.Count(fdb, " dst 192.0.2."); got != peers || !strings.Contains(fdb, fmt.Sprintf("0e:00:00:02:57:01 dst 192.0.2.%d self permanent", 100+599%150)) {
		t.Errorf("%d fdb entries, want %d:\n%.300s", got, peers, fdb)
	}
}
