package wireguard

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/internal/metrics"
	"github.com/flannelu/flannelu/subnet"
	"github.com/flannelu/flannelu/testbed"
)

var (
	network  = netip.MustParsePrefix("198.18.0.0/16")
	network6 = netip.MustParsePrefix("2001:db8:100::/48")
)

// extIface makes a dummy underlay link with the host's addresses (once).
func extIface(t *testing.T) *backend.ExternalInterface {
	t.Helper()
	testbed.RequireRoot(t)
	if _, err := net.InterfaceByName("ext0"); err != nil {
		for _, args := range [][]string{
			{"ip", "link", "add", "ext0", "type", "veth", "peer", "name", "ext1"}, // this kernel has no dummy links
			{"ip", "addr", "add", "192.0.2.1/24", "dev", "ext0"},
			{"ip", "addr", "add", "2001:db8:0:1::1/64", "dev", "ext0", "nodad"},
			{"ip", "link", "set", "ext0", "up"},
			{"ip", "link", "set", "ext1", "up"},
		} {
			if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %v %s", args, err, out)
			}
		}
	}
	ifc, err := net.InterfaceByName("ext0")
	if err != nil {
		t.Fatal(err)
	}
	a4, a6 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8:0:1::1")
	return &backend.ExternalInterface{Iface: ifc, IfaceAddr: a4, ExtAddr: a4, IfaceV6Addr: a6, ExtV6Addr: a6}
}

// newTestBackend makes a backend whose devices are <name> and <name>6,
// removed when the test ends (they are persistent TUNs).
func newTestBackend(t *testing.T, name, config, keyFile string, v6 bool) *Backend {
	t.Helper()
	opts := Options{Network: network, BackendJSON: []byte(config), KeyFile: keyFile, DeviceName: name, DeviceNameV6: name + "6",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: metrics.NewRegistry()}
	if v6 {
		opts.IPv6Network = network6
	}
	b, err := New(extIface(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.closeDevices()
		for _, n := range []string{name, name + "6"} {
			if l, err := netlink.LinkByName(n); err == nil {
				netlink.LinkDel(l)
			}
		}
	})
	return b
}

func ownLease(i int) subnet.Lease {
	return subnet.Lease{Subnet: netip.MustParsePrefix("198.18." + strconv.Itoa(i) + ".0/24"),
		IPv6Subnet: netip.MustParsePrefix("2001:db8:100:" + strconv.Itoa(i) + "::/64")}
}

// wgDump is `wg show <dev> dump`: the interface line, then one per peer.
func wgDump(t *testing.T, dev string) []string {
	t.Helper()
	out, err := exec.Command("wg", "show", dev, "dump").CombinedOutput()
	if err != nil {
		t.Fatalf("wg show %s dump: %v %s", dev, err, out)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

// TestUserspaceDevicesAsFlanneldLaysThemOut: on this kernel (no
// WireGuard) Init and Start make wireguard-go devices on persistent TUNs
// laid out as flanneld's, publish flanneld's lease data, and answer wg(8).
func TestUserspaceDevicesAsFlanneldLaysThemOut(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "wgkey")
	psk, _ := wgtypes.GenerateKey()
	b := newTestBackend(t, "wgl", `{"Type":"wireguard","PSK":"`+psk.String()+`","PersistentKeepaliveInterval":15}`, keyFile, true)
	attrs, err := b.Init(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := LoadKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pub := key.PublicKey().String()
	if got, want := string(attrs.BackendData), `{"PublicKey":"`+pub+`","Port":51820}`; got != want || attrs.BackendType != "wireguard" {
		t.Errorf("BackendData %s, want %s", got, want)
	}
	if got, want := string(attrs.BackendV6Data), `{"PublicKey":"`+pub+`","Port":51821}`; got != want {
		t.Errorf("BackendV6Data %s, want %s", got, want)
	}
	if err := b.Start(context.Background(), ownLease(1)); err != nil {
		t.Fatal(err)
	}
	checkLayout(t, "wgl", "198.18.1.0/32", "198.18.0.0/16", 1420)
	checkLayout(t, "wgl6", "2001:db8:100:1::/128", "2001:db8:100::/48", 1420)
	if d := wgDump(t, "wgl"); len(d) != 1 || !strings.Contains(d[0], pub) || !strings.Contains(d[0], "\t51820\t") {
		t.Errorf("wg show wgl: %q", d)
	}

	// A peer, its removal, a peer with this host's key, a foreign lease.
	peerKey, _ := wgtypes.GeneratePrivateKey()
	l := wgLease(peerKey.PublicKey(), 51820, 51821, "192.0.2.2", "2001:db8:0:1::2")
	b.HandleEvents(context.Background(), []subnet.Event{{Type: subnet.EventAdded, Lease: l}})
	d := wgDump(t, "wgl")
	// Key, PSK, endpoint, allowed IPs, (handshake, rx, tx: the new peer
	// was sent a handshake at once), keepalive.
	if f := strings.Split(d[len(d)-1], "\t"); len(d) != 2 || len(f) != 8 ||
		strings.Join(f[:4], " ") != peerKey.PublicKey().String()+" "+psk.String()+" 192.0.2.2:51820 198.18.2.0/24" || f[7] != "15" || f[6] == "0" {
		t.Errorf("wg show wgl dump after the peer came:\n%s", strings.Join(d, "\n"))
	}
	if d := wgDump(t, "wgl6"); len(d) != 2 || !strings.Contains(d[1], "[2001:db8:0:1::2]:51821\t2001:db8:100:2::/64") {
		t.Errorf("wg show wgl6 dump:\n%s", strings.Join(d, "\n"))
	}
	mine := wgLease(key.PublicKey(), 51820, 51821, "192.0.2.3", "2001:db8:0:1::3")
	mine.Subnet, mine.IPv6Subnet = netip.MustParsePrefix("198.18.3.0/24"), netip.MustParsePrefix("2001:db8:100:3::/64")
	foreign := subnet.Lease{Subnet: netip.MustParsePrefix("198.18.4.0/24"), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.4"), BackendType: "vxlan"}}
	b.HandleEvents(context.Background(), []subnet.Event{{Type: subnet.EventAdded, Lease: mine}, {Type: subnet.EventAdded, Lease: foreign}})
	if d := wgDump(t, "wgl"); len(d) != 2 {
		t.Errorf("a lease with this host's key or of another type made a peer:\n%s", strings.Join(d, "\n"))
	}
	if n := b.PeerErrors(); n != 3 { // two halves with our key, one foreign lease
		t.Errorf("peer errors %d, want 3", n)
	}
	b.HandleEvents(context.Background(), []subnet.Event{{Type: subnet.EventRemoved, Lease: l}})
	if d := wgDump(t, "wgl"); len(d) != 1 {
		t.Errorf("removed peer still there:\n%s", strings.Join(d, "\n"))
	}

	// Run ends the in-process device; its TUN stays, with address and route,
	// and a restarted backend takes it up with the same key.
	link, _ := netlink.LinkByName("wgl")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := exec.Command("wg", "show", "wgl").CombinedOutput(); err == nil {
		t.Error("wg show still answers after Run returned")
	}
	checkLayout(t, "wgl", "198.18.1.0/32", "198.18.0.0/16", 1420)
	again := newTestBackend(t, "wgl", `{"Type":"wireguard"}`, keyFile, true)
	attrs2, err := again.Init(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if string(attrs2.BackendData) != string(attrs.BackendData) {
		t.Errorf("restart: BackendData %s, was %s", attrs2.BackendData, attrs.BackendData)
	}
	if l2, _ := netlink.LinkByName("wgl"); l2 == nil || l2.Attrs().Index != link.Attrs().Index {
		t.Errorf("restart made a new device instead of taking up the kept TUN")
	}
}

// checkLayout checks one device: a TUN of the MTU with exactly the
// address and a scope-link route for the network.
func checkLayout(t *testing.T, dev, addr, route string, mtu int) {
	t.Helper()
	link, err := netlink.LinkByName(dev)
	if err != nil {
		t.Fatalf("%s: %v", dev, err)
	}
	if link.Type() != "tuntap" || link.Attrs().MTU != mtu || link.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("%s: type %s, MTU %d, flags %v", dev, link.Type(), link.Attrs().MTU, link.Attrs().Flags)
	}
	out, _ := exec.Command("ip", "-j", "addr", "show", "dev", dev).CombinedOutput()
	var addrs []struct {
		AddrInfo []struct {
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
			Scope     string `json:"scope"`
		} `json:"addr_info"`
	}
	json.Unmarshal(out, &addrs)
	var got []string
	for _, a := range addrs[0].AddrInfo {
		if a.Scope != "link" {
			got = append(got, a.Local+"/"+strconv.Itoa(a.PrefixLen))
		}
	}
	if len(got) != 1 || got[0] != addr {
		t.Errorf("%s addresses %v, want %s", dev, got, addr)
	}
	out, _ = exec.Command("ip", family(route), "route", "show", "exact", route).CombinedOutput()
	if r := strings.TrimSpace(string(out)); !strings.HasPrefix(r, route+" dev "+dev) || !strings.Contains(r, "scope link") && family(route) == "-4" {
		t.Errorf("route %s: %q", route, r)
	}
}

// TestKernelPathDecisions: which device a host gets. This kernel has no
// WireGuard, so the kernel device itself cannot be made here: the test
// checks that its refusal is read as such, and the choices around it.
func TestKernelPathDecisions(t *testing.T) {
	extIface(t)
	la := netlink.NewLinkAttrs()
	la.Name = "wgk0"
	err := netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: la})
	if err == nil {
		netlink.LinkDel(&netlink.Wireguard{LinkAttrs: la})
		t.Log("this kernel has WireGuard: the kernel device is used here")
	} else if !isNoWireGuard(err) {
		t.Fatalf("LinkAdd wireguard: %v, which isNoWireGuard does not take for a kernel without WireGuard", err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	nl, _ := netlink.NewHandle()
	// A link of the device's name that is not WireGuard's is replaced.
	if out, err := exec.Command("ip", "link", "add", "wgk1", "type", "veth", "peer", "name", "wgk1p").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	dev, link, err := openDevice(nl, "wgk1", 1420, log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { dev.close(); netlink.LinkDel(link) }()
	if want := map[bool]string{true: "wireguard", false: "tuntap"}[err == nil && dev.kind() == "kernel"]; link.Type() != want || link.Attrs().MTU != 1420 {
		t.Errorf("wgk1: %s link, MTU %d", link.Type(), link.Attrs().MTU)
	}
	if !dev.fresh() {
		t.Error("a device made now is not fresh")
	}
}

// TestModeChangeRemovesTheUnusedDevice: a host moved from separate to
// auto keeps no flannel-wg-v6 (its route would draw the IPv6 network).
func TestModeChangeRemovesTheUnusedDevice(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "wgkey")
	sep := newTestBackend(t, "wgm", `{"Type":"wireguard"}`, keyFile, true)
	if _, err := sep.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	sep.closeDevices()
	if _, err := netlink.LinkByName("wgm6"); err != nil {
		t.Fatal(err)
	}
	auto := newTestBackend(t, "wgm", `{"Type":"wireguard","Mode":"auto"}`, keyFile, true)
	attrs, err := auto.Init(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName("wgm6"); err == nil {
		t.Error("wgm6 still there in auto mode")
	}
	// One device: BackendV6Data names the port it listens on.
	if !strings.Contains(string(attrs.BackendV6Data), `"Port":51820`) {
		t.Errorf("auto mode BackendV6Data %s", attrs.BackendV6Data)
	}
	if err := auto.Start(context.Background(), ownLease(1)); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"198.18.0.0/16", "2001:db8:100::/48"} {
		out, _ := exec.Command("ip", family(r), "route", "show", "exact", r).CombinedOutput()
		if !strings.Contains(string(out), "dev wgm ") {
			t.Errorf("route %s: %q, want it through wgm", r, out)
		}
	}
}

// family is ip(8)'s family flag for a prefix.
func family(prefix string) string {
	if strings.Contains(prefix, ":") {
		return "-6"
	}
	return "-4"
}
