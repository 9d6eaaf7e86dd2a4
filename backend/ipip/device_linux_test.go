package ipip

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

// TestDeviceDecisions covers what the kernel path does with a
// flannel.ipip that exists already, as flanneld's configureIPIPDevice:
// keep flanneld's device, recreate one with another local or a remote,
// refuse a user's device of another kind; and flannelu's own TUN of a
// userspace run is deleted. (This machine's kernel has no ipip: the
// device itself cannot be created here.)
func TestDeviceDecisions(t *testing.T) {
	local := netip.MustParseAddr("192.0.2.1")
	attrs := netlink.LinkAttrs{Name: DeviceName}
	for _, tc := range []struct {
		name      string
		link      netlink.Link
		why       string // "" compatible
		deletable bool
	}{
		{"flanneld's", &netlink.Iptun{LinkAttrs: attrs, Local: net.ParseIP("192.0.2.1")}, "", true},
		{"remote 0.0.0.0", &netlink.Iptun{LinkAttrs: attrs, Local: net.ParseIP("192.0.2.1"), Remote: net.ParseIP("0.0.0.0")}, "", true},
		{"other local", &netlink.Iptun{LinkAttrs: attrs, Local: net.ParseIP("192.0.2.9")}, "local 192.0.2.9", true},
		{"a remote", &netlink.Iptun{LinkAttrs: attrs, Local: net.ParseIP("192.0.2.1"), Remote: net.ParseIP("192.0.2.7")}, "remote 192.0.2.7", true},
		{"userspace TUN", &netlink.Tuntap{LinkAttrs: attrs, Mode: netlink.TUNTAP_MODE_TUN}, "a tuntap device", true},
		{"a user's bridge", &netlink.Bridge{LinkAttrs: attrs}, "a bridge device", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			why := incompatible(tc.link, local)
			if (tc.why == "") != (why == "") || !strings.Contains(why, tc.why) {
				t.Errorf("incompatible = %q, want %q", why, tc.why)
			}
			if why != "" && ours(tc.link) != tc.deletable {
				t.Errorf("ours = %v, want %v", ours(tc.link), tc.deletable)
			}
		})
	}
	b, err := New(ext(), Options{Network: network})
	if err != nil {
		t.Fatal(err)
	}
	want := b.wantDevice()
	if want.Name != DeviceName || !want.Local.Equal(net.ParseIP("192.0.2.1")) || want.Remote != nil || want.Ttl != 0 || want.PMtuDisc != 0 {
		t.Fatalf("device %+v: want flanneld's (local the interface address, no remote, ttl inherit, nopmtudisc)", want)
	}
}
