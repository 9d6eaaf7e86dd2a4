package leftover

import (
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/testbed"
	"github.com/flannelu/flannelu/testbed/kerneltest"
)

var network = netip.MustParsePrefix("198.18.0.0/16")

// host is a namespace with ext0 (192.0.2.1/24) and what every backend
// leaves: flannel0 (udp), flannel.1 and flannel.2 (vxlan, two VNIs), a
// host-gw peer route, and things that are not flannel's: a vxlan device
// of another name, a TUN named like no flannel device, a peer-looking
// route with proto static, a route outside the network.
func host(t *testing.T) *kerneltest.Namespace {
	t.Helper()
	testbed.RequireRoot(t)
	ns := kerneltest.NewNamespace(t, "left")
	far := kerneltest.NewNamespace(t, "far")
	kerneltest.Veth(t, ns, "ext0", "192.0.2.1/24", far, "ext0", "192.0.2.99/24")
	ns.IP(t, "tuntap", "add", "flannel0", "mode", "tun")
	ns.IP(t, "addr", "add", "198.18.1.0/32", "dev", "flannel0")
	ns.IP(t, "link", "set", "flannel0", "up")
	ns.IP(t, "route", "add", "198.18.0.0/16", "dev", "flannel0")
	ns.IP(t, "tuntap", "add", "tun7", "mode", "tun")
	for _, vx := range [][2]string{{"flannel.1", "1"}, {"flannel.2", "2"}, {"vx0", "3"}} {
		ns.IP(t, "link", "add", vx[0], "type", "vxlan", "id", vx[1], "dev", "ext0", "dstport", "8472")
	}
	ns.IP(t, "route", "add", "198.18.5.0/24", "via", "192.0.2.5", "dev", "ext0")
	ns.IP(t, "route", "add", "198.18.6.0/24", "via", "192.0.2.6", "dev", "ext0", "proto", "static")
	ns.IP(t, "route", "add", "203.0.113.0/24", "via", "192.0.2.7", "dev", "ext0")
	return ns
}

func links(t *testing.T, ns *kerneltest.Namespace) []string {
	// Through netlink, not `ip link`: ip also prints "Error: Peer netns
	// reference is invalid" for a veth whose peer's namespace another test
	// is deleting at that moment.
	ls, err := ns.NL.LinkList()
	if err != nil {
		t.Fatalf("list links: %v", err)
	}
	var names []string
	for _, l := range ls {
		names = append(names, l.Attrs().Name)
	}
	slices.Sort(names)
	return names
}

func routes(t *testing.T, ns *kerneltest.Namespace) string {
	return ns.IP(t, "route", "show", "dev", "ext0")
}

func TestRemovesWhatOtherBackendsLeft(t *testing.T) {
	for _, tc := range []struct {
		backend, json string
		links         []string
		hostGWRoute   bool
	}{
		{"vxlan", `{"Type":"vxlan"}`, []string{"ext0", "flannel.1", "lo", "tun7", "vx0"}, false},
		{"vxlan", `{"Type":"vxlan","VNI":2}`, []string{"ext0", "flannel.2", "lo", "tun7", "vx0"}, false},
		{"vxlan", `{"Type":"vxlan","DirectRouting":true}`, []string{"ext0", "flannel.1", "lo", "tun7", "vx0"}, true},
		{"udp", `{"Type":"udp"}`, []string{"ext0", "flannel0", "lo", "tun7", "vx0"}, false},
		{"host-gw", `{"Type":"host-gw"}`, []string{"ext0", "lo", "tun7", "vx0"}, true},
	} {
		t.Run(tc.json, func(t *testing.T) {
			ns := host(t)
			ext := ns.External(t, "ext0", "192.0.2.1/24")
			err := Remove(Options{Backend: tc.backend, BackendJSON: []byte(tc.json), ExtIface: ext.Iface.Index,
				Networks: []netip.Prefix{network}, Logger: kerneltest.Logger(t), Netlink: ns.NL})
			if err != nil {
				t.Fatal(err)
			}
			if got := links(t, ns); !slices.Equal(got, tc.links) {
				t.Errorf("links %v, want %v", got, tc.links)
			}
			r := routes(t, ns)
			if got := strings.Contains(r, "198.18.5.0/24 via 192.0.2.5"); got != tc.hostGWRoute {
				t.Errorf("host-gw's route kept: %v, want %v:\n%s", got, tc.hostGWRoute, r)
			}
			for _, mine := range []string{"198.18.6.0/24 via 192.0.2.6 proto static", "203.0.113.0/24 via 192.0.2.7"} {
				if !strings.Contains(r, mine) {
					t.Errorf("route %q that is not flannel's removed:\n%s", mine, r)
				}
			}
		})
	}
}

// holdTUN attaches a queue to the TUN device name in ns, as a running udp
// daemon holds flannel0; the returned func lets it go.
func holdTUN(t *testing.T, ns *kerneltest.Namespace, name string) (release func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	if err := netns.Set(ns.NS); err != nil {
		t.Fatal(err)
	}
	defer netns.Set(orig) //nolint:errcheck // the thread is locked; failing to return is fatal for the test process anyway
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		t.Fatalf("TUNSETIFF %s: %v", name, err)
	}
	var once sync.Once
	release = func() { once.Do(func() { unix.Close(fd) }) }
	t.Cleanup(release)
	return release
}

// TestKeepsAnotherNetworksDevices: a second network's daemon on the same
// host (flannel's multi-network pattern) keeps its devices when this one
// starts: a TUN a process holds open, a device addressed outside this
// host's previous subnets. Unheld and within them, they are leftovers.
func TestKeepsAnotherNetworksDevices(t *testing.T) {
	ns := host(t)
	ext := ns.External(t, "ext0", "192.0.2.1/24")
	ns.IP(t, "addr", "add", "198.18.200.0/32", "dev", "flannel.2") // another network's lease
	release := holdTUN(t, ns, "flannel0")
	opts := Options{Backend: "host-gw", BackendJSON: []byte(`{"Type":"host-gw"}`), ExtIface: ext.Iface.Index,
		Networks: []netip.Prefix{network}, Subnets: []netip.Prefix{netip.MustParsePrefix("198.18.1.0/24")},
		Logger: kerneltest.Logger(t), Netlink: ns.NL}
	if err := Remove(opts); err != nil {
		t.Fatal(err)
	}
	if got, want := links(t, ns), []string{"ext0", "flannel.2", "flannel0", "lo", "tun7", "vx0"}; !slices.Equal(got, want) {
		t.Errorf("with flannel0 held and flannel.2 another network's: links %v, want %v", got, want)
	}
	release()
	ns.IP(t, "addr", "add", "198.18.1.0/32", "dev", "flannel.2") // now also this host's: still another network's too
	if err := Remove(opts); err != nil {
		t.Fatal(err)
	}
	if got, want := links(t, ns), []string{"ext0", "flannel.2", "lo", "tun7", "vx0"}; !slices.Equal(got, want) {
		t.Errorf("with flannel0 let go: links %v, want %v", got, want)
	}
}
