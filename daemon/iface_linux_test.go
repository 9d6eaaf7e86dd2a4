package daemon

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/testbed"
)

// ifaceNS is a namespace with IPv6 on and two links: eth0 with
// 192.0.2.1/24 and 2001:db8:0:1::1/64 (the default routes of both
// families), eth1 with 198.51.100.1/24 and only its IPv6 link-local
// address.
func ifaceNS(t *testing.T) testbed.NS {
	ns := testbed.Namespace(t, "iface")
	ns.Exec(t, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.conf.default.disable_ipv6=0")
	for _, args := range [][]string{
		{"link", "add", "eth0", "type", "veth", "peer", "name", "peer0"},
		{"link", "add", "eth1", "type", "veth", "peer", "name", "peer1"},
		{"addr", "add", "192.0.2.1/24", "dev", "eth0"},
		{"-6", "addr", "add", "2001:db8:0:1::1/64", "dev", "eth0", "nodad"},
		{"addr", "add", "198.51.100.1/24", "dev", "eth1"},
		{"link", "set", "eth0", "up"}, {"link", "set", "peer0", "up"},
		{"link", "set", "eth1", "up"}, {"link", "set", "peer1", "up"},
		{"route", "add", "default", "via", "192.0.2.254"},
		{"-6", "route", "add", "default", "via", "2001:db8:0:1::fe"},
	} {
		ns.IP(t, args...)
	}
	// The kernel gives eth1 its link-local address only some time after the
	// link is up; the tests expect to see it refused, so wait for it.
	if err := testbed.Eventually(30*time.Second, func() error {
		if out := ns.IP(t, "-6", "addr", "show", "dev", "eth1", "scope", "link"); !strings.Contains(out, "fe80:") {
			return fmt.Errorf("eth1 has no link-local address yet: %q", out)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return ns
}

// lookupIn runs lookupExtIface inside ns with the given flags.
func lookupIn(t *testing.T, ns testbed.NS, fams families, args ...string) (*backend.ExternalInterface, error) {
	t.Helper()
	o, err := ParseOptions(args, envOf(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	var ext *backend.ExternalInterface
	ns.In(t, func() { ext, err = lookupExtIface(o, fams, discardLogger()) })
	return ext, err
}

// describe is the choice as one line: iface, then each family's interface
// and public address.
func describe(ext *backend.ExternalInterface) string {
	return strings.Join([]string{ext.Iface.Name, ext.IfaceAddr.String(), ext.ExtAddr.String(), ext.IfaceV6Addr.String(), ext.ExtV6Addr.String()}, " ")
}

func TestLookupExtIfaceIPv6(t *testing.T) {
	ns := ifaceNS(t)
	dual, v6only, v4only := families{true, true}, families{false, true}, families{true, false}
	const both = "eth0 192.0.2.1 192.0.2.1 2001:db8:0:1::1 2001:db8:0:1::1"
	for _, tc := range []struct {
		name string
		fams families
		args []string
		want string
	}{
		{"dual stack, default route", dual, nil, both},
		{"dual stack, --iface name", dual, []string{"--iface", "eth0"}, both},
		{"dual stack, --iface IPv6 address", dual, []string{"--iface", "2001:db8:0:1::1"}, both},
		{"dual stack, --iface IPv4 address fills IPv6 too", dual, []string{"--iface", "192.0.2.1"}, both},
		{"first --iface that has both families", dual, []string{"--iface", "eth1", "--iface", "eth0"}, both},
		{"--iface-regex on an IPv6 address", dual, []string{"--iface-regex", `^2001:db8:0:1::`}, both},
		{"--public-ipv6", dual, []string{"--public-ipv6", "2001:db8:0:2::1"}, "eth0 192.0.2.1 192.0.2.1 2001:db8:0:1::1 2001:db8:0:2::1"},
		{"IPv6 only, default route", v6only, nil, "eth0 invalid IP invalid IP 2001:db8:0:1::1 2001:db8:0:1::1"},
		{"IPv6 only, --public-ip ignored", v6only, []string{"--public-ip", "192.0.2.9"}, "eth0 invalid IP invalid IP 2001:db8:0:1::1 2001:db8:0:1::1"},
		{"IPv4 only, --iface IPv6 address", v4only, []string{"--iface", "2001:db8:0:1::1"}, "eth0 192.0.2.1 192.0.2.1 invalid IP invalid IP"},
		{"IPv4 only, eth1", v4only, []string{"--iface", "eth1"}, "eth1 198.51.100.1 198.51.100.1 invalid IP invalid IP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ext, err := lookupIn(t, ns, tc.fams, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if got := describe(ext); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestLookupExtIfaceRefusesUnusableAddresses(t *testing.T) {
	ns := ifaceNS(t)
	dual := families{true, true}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--iface", "eth1"}, "interface eth1 has no usable IPv6 address (fe80:"},
		{[]string{"--iface", "eth1"}, "is a link-local address"},
		{[]string{"--iface", "::1"}, "--iface ::1: not usable for the underlay: ::1 is a loopback address"},
		{[]string{"--iface", "fe80::1"}, "fe80::1 is a link-local address"},
		{[]string{"--iface", "127.0.0.1"}, "127.0.0.1 is a loopback address"},
		{[]string{"--iface", "2001:db8:0:9::1"}, "no matching interface"},
		{[]string{"--iface-regex", "^eth1$"}, "interface eth1 has no usable IPv6 address"},
	} {
		_, err := lookupIn(t, ns, dual, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error with %q", tc.args, err, tc.want)
		}
	}
	// No IPv6 default route: an IPv6-only network needs --iface then.
	ns.IP(t, "-6", "route", "del", "default")
	_, err := lookupIn(t, ns, families{false, true})
	if err == nil || !strings.Contains(err.Error(), "no IPv6 default route") {
		t.Errorf("IPv6 only without an IPv6 default route: %v", err)
	}
	if ext, err := lookupIn(t, ns, families{false, true}, "--iface", "eth0"); err != nil || ext.IfaceV6Addr != netip.MustParseAddr("2001:db8:0:1::1") {
		t.Errorf("IPv6 only with --iface eth0: %v, %v", ext, err)
	}
}

// TestLookupExtIfaceAsFlanneldV028: the options fall through as in
// flanneld v0.28 (each --iface, then each --iface-regex, then
// --iface-can-reach), and without them --public-ip picks the interface
// that holds it.
func TestLookupExtIfaceAsFlanneldV028(t *testing.T) {
	ns := ifaceNS(t)
	v4 := families{true, false}
	const eth1 = "eth1 198.51.100.1 198.51.100.1 invalid IP invalid IP"
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"--iface missing, then --iface-regex", []string{"--iface", "eth9", "--iface-regex", "^eth1$"}, eth1},
		{"a bad regex is skipped", []string{"--iface-regex", "(", "--iface-regex", "^198[.]51"}, eth1},
		{"--iface-can-reach after the others", []string{"--iface", "eth9", "--iface-regex", "^nomatch$", "--iface-can-reach", "198.51.100.77"}, eth1},
		{"--iface-can-reach through the default route", []string{"--iface-can-reach", "203.0.113.5"}, "eth0 192.0.2.1 192.0.2.1 invalid IP invalid IP"},
		{"--public-ip held by eth1", []string{"--public-ip", "198.51.100.1"}, eth1},
		{"--public-ip on no interface: the default route's", []string{"--public-ip", "203.0.113.9"}, "eth0 192.0.2.1 203.0.113.9 invalid IP invalid IP"},
		{"--iface first even with --public-ip", []string{"--iface", "eth0", "--public-ip", "198.51.100.1"}, "eth0 192.0.2.1 198.51.100.1 invalid IP invalid IP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ext, err := lookupIn(t, ns, v4, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if got := describe(ext); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
	_, err := lookupIn(t, ns, v4, "--iface", "eth9", "--iface-can-reach", "eth0")
	if err == nil || !strings.Contains(err.Error(), "--iface eth9:") || !strings.Contains(err.Error(), "--iface-can-reach eth0: not an IP address") {
		t.Errorf("nothing fits: %v, want an error naming each option", err)
	}
}
