package kube

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/flannelu/flannelu/subnet"
)

func TestPrefixIsNormalisedAsFlanneldDoes(t *testing.T) {
	for in, want := range map[string]string{
		"flannel.alpha.coreos.com":         "flannel.alpha.coreos.com/",
		"flannel.alpha.coreos.com/":        "flannel.alpha.coreos.com/",
		"example.com/net":                  "example.com/net-",
		"example.com/net-":                 "example.com/net-",
		"example.com/net_1":                "example.com/net_1-",
		"Upper.example.com":                "Upper.example.com/", // flanneld's check is anchored at the end only
		"sub-domain.example.org/flannelu-": "sub-domain.example.org/flannelu-",
	} {
		a, err := NewAnnotations(in)
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		if a.PublicIP != want+"public-ip" || a.SubnetKubeManaged != want+"kube-subnet-manager" {
			t.Errorf("%q: keys %q %q, want prefix %q", in, a.PublicIP, a.SubnetKubeManaged, want)
		}
	}
	for in, want := range map[string]string{
		"a.b/c/d":                          "at most one slash",
		"nodots":                           "must be a domain name",
		"example.com/UPPER":                "must be a domain name",
		"example.com/a b":                  "must be a domain name",
		strings.Repeat("a", 250) + ".com/": "not a valid annotation key",
	} {
		if _, err := NewAnnotations(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%.40q: error %v, want one containing %q", in, err, want)
		}
	}
}

func TestAnnotationKeysAreFlannels(t *testing.T) {
	a, err := NewAnnotations(DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join([]string{a.SubnetKubeManaged, a.BackendType, a.BackendData, a.BackendV6Data, a.PublicIP,
		a.PublicIPv6, a.PublicIPOverwrite, a.PublicIPv6Overwrite, a.NodePublicIP, a.NodePublicIPv6}, " ")
	want := "flannel.alpha.coreos.com/kube-subnet-manager flannel.alpha.coreos.com/backend-type " +
		"flannel.alpha.coreos.com/backend-data flannel.alpha.coreos.com/backend-v6-data " +
		"flannel.alpha.coreos.com/public-ip flannel.alpha.coreos.com/public-ipv6 " +
		"flannel.alpha.coreos.com/public-ip-overwrite flannel.alpha.coreos.com/public-ipv6-overwrite " +
		"flannel.alpha.coreos.com/node-public-ip flannel.alpha.coreos.com/node-public-ipv6"
	if got != want {
		t.Fatalf("keys\n%s\nwant\n%s", got, want)
	}
}

var ann, _ = NewAnnotations(DefaultPrefix)

func node(name string, annotations map[string]string, podCIDRs ...string) *v1.Node {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations}}
	n.Spec.PodCIDRs = podCIDRs
	if len(podCIDRs) > 0 {
		n.Spec.PodCIDR = podCIDRs[0]
	}
	return n
}

// TestPublishedIsWhatFlanneldWrites pins the annotation values flanneld
// writes for each backend type flannelu has.
func TestPublishedIsWhatFlanneldWrites(t *testing.T) {
	ip := netip.MustParseAddr("192.0.2.1")
	vx := json.RawMessage(`{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}`)
	ip6, vx6 := netip.MustParseAddr("2001:db8:0:1::1"), json.RawMessage(`{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:46"}`)
	wg := json.RawMessage(`{"PublicKey":"yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=","Port":51820}`)
	wg6 := json.RawMessage(`{"PublicKey":"yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=","Port":51821}`)
	p := "flannel.alpha.coreos.com/"
	for _, c := range []struct {
		name  string
		attrs subnet.LeaseAttrs
		want  map[string]string
	}{
		// flanneld's udp backend sets no BackendType.
		{"udp", subnet.LeaseAttrs{PublicIP: ip}, map[string]string{
			p + "backend-type": "", p + "backend-data": "null", p + "public-ip": "192.0.2.1", p + "kube-subnet-manager": "true"}},
		{"host-gw", subnet.LeaseAttrs{PublicIP: ip, BackendType: "host-gw"}, map[string]string{
			p + "backend-type": "host-gw", p + "backend-data": "null", p + "public-ip": "192.0.2.1", p + "kube-subnet-manager": "true"}},
		{"vxlan", subnet.LeaseAttrs{PublicIP: ip, BackendType: "vxlan", BackendData: vx}, map[string]string{
			p + "backend-type": "vxlan", p + "backend-data": string(vx), p + "public-ip": "192.0.2.1", p + "kube-subnet-manager": "true"}},
		// flanneld v0.28's dual stack: the IPv6 side next to the IPv4 one.
		{"vxlan dual stack", subnet.LeaseAttrs{PublicIP: ip, PublicIPv6: ip6, BackendType: "vxlan", BackendData: vx, BackendV6Data: vx6},
			map[string]string{p + "backend-type": "vxlan", p + "backend-data": string(vx), p + "public-ip": "192.0.2.1",
				p + "backend-v6-data": string(vx6), p + "public-ipv6": "2001:db8:0:1::1", p + "kube-subnet-manager": "true"}},
		{"host-gw dual stack", subnet.LeaseAttrs{PublicIP: ip, PublicIPv6: ip6, BackendType: "host-gw"}, map[string]string{
			p + "backend-type": "host-gw", p + "backend-data": "null", p + "public-ip": "192.0.2.1",
			p + "backend-v6-data": "null", p + "public-ipv6": "2001:db8:0:1::1", p + "kube-subnet-manager": "true"}},
		// wireguard: BackendData (and BackendV6Data) {"PublicKey","Port"}.
		{"wireguard dual stack", subnet.LeaseAttrs{PublicIP: ip, PublicIPv6: ip6, BackendType: "wireguard", BackendData: wg, BackendV6Data: wg6},
			map[string]string{p + "backend-type": "wireguard", p + "backend-data": string(wg), p + "public-ip": "192.0.2.1",
				p + "backend-v6-data": string(wg6), p + "public-ipv6": "2001:db8:0:1::1", p + "kube-subnet-manager": "true"}},
		// IPv6 only: flanneld's wireguard still writes its (empty) IPv4 side.
		{"wireguard IPv6 only", subnet.LeaseAttrs{PublicIPv6: ip6, BackendType: "wireguard", BackendV6Data: wg6}, map[string]string{
			p + "backend-type": "wireguard", p + "backend-data": "null", p + "public-ip": "0.0.0.0",
			p + "backend-v6-data": string(wg6), p + "public-ipv6": "2001:db8:0:1::1", p + "kube-subnet-manager": "true"}},
		// IPv6 only: vxlan without IPv4 data publishes no IPv4 side.
		{"vxlan IPv6 only", subnet.LeaseAttrs{PublicIPv6: ip6, BackendType: "vxlan", BackendV6Data: vx6}, map[string]string{
			p + "backend-type": "vxlan", p + "backend-v6-data": string(vx6), p + "public-ipv6": "2001:db8:0:1::1", p + "kube-subnet-manager": "true"}},
	} {
		got := ann.Published(c.attrs, node("n", nil))
		if !equalMaps(got, c.want) {
			t.Errorf("%s: %v\nwant %v", c.name, got, c.want)
		}
	}
}

func TestPublicIPOverwriteIsHonoured(t *testing.T) {
	n := node("n", map[string]string{ann.PublicIPOverwrite: "203.0.113.7"})
	got := ann.Published(subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.1"), BackendType: "host-gw"}, n)
	if got[ann.PublicIP] != "203.0.113.7" {
		t.Fatalf("public-ip %q, want the overwrite 203.0.113.7", got[ann.PublicIP])
	}
	if keys := Differs(n, got); len(keys) != 4 {
		t.Fatalf("a node without annotations differs in %v, want all four", keys)
	}
}

func TestNodeLeaseReadsPeers(t *testing.T) {
	v4 := &subnet.Config{EnableIPv4: true}
	dual := &subnet.Config{EnableIPv4: true, EnableIPv6: true}
	good := map[string]string{ann.SubnetKubeManaged: "true", ann.BackendType: "vxlan",
		ann.BackendData: `{ "VNI": 1, "VtepMAC": "02:00:00:00:00:01" }`, ann.PublicIP: "192.0.2.2"}
	l, err := ann.NodeLease(node("n2", good, "198.18.2.0/24"), v4)
	if err != nil {
		t.Fatal(err)
	}
	if l.Subnet.String() != "198.18.2.0/24" || l.Attrs.PublicIP.String() != "192.0.2.2" || l.Attrs.BackendType != "vxlan" ||
		string(l.Attrs.BackendData) != `{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}` {
		t.Fatalf("lease %+v", l)
	}
	// spec.podCIDR alone (an older cluster) and an unmasked CIDR.
	old := node("n3", map[string]string{ann.PublicIP: "192.0.2.3", ann.BackendData: "null"})
	old.Spec.PodCIDR = "198.18.3.7/24"
	if l, err := ann.NodeLease(old, v4); err != nil || l.Subnet.String() != "198.18.3.0/24" || l.Attrs.BackendData != nil {
		t.Fatalf("podCIDR only: %+v %v", l, err)
	}
	dualNode := node("n4", map[string]string{ann.PublicIP: "192.0.2.4", ann.PublicIPv6: "2001:db8:0:1::4",
		ann.BackendType: "host-gw", ann.BackendData: "null", ann.BackendV6Data: "null"}, "198.18.4.0/24", "2001:db8:100:4::/64")
	if l, err := ann.NodeLease(dualNode, dual); err != nil || l.IPv6Subnet.String() != "2001:db8:100:4::/64" || l.Attrs.PublicIPv6.String() != "2001:db8:0:1::4" {
		t.Fatalf("dual stack: %+v %v", l, err)
	}

	for name, c := range map[string]struct {
		n    *v1.Node
		cfg  *subnet.Config
		want string
	}{
		"no public-ip":      {node("a", map[string]string{}, "198.18.5.0/24"), v4, "public-ip is missing"},
		"bad public-ip":     {node("a", map[string]string{ann.PublicIP: "192.0.2.300"}, "198.18.5.0/24"), v4, `public-ip="192.0.2.300" is not an IPv4`},
		"v6 as public-ip":   {node("a", map[string]string{ann.PublicIP: "2001:db8::1"}, "198.18.5.0/24"), v4, "is not an IPv4"},
		"bad backend-data":  {node("a", map[string]string{ann.PublicIP: "192.0.2.5", ann.BackendData: "{VNI"}, "198.18.5.0/24"), v4, "backend-data=\"{VNI\" is not JSON"},
		"no podCIDR":        {node("a", map[string]string{ann.PublicIP: "192.0.2.5"}), v4, "no IPv4 podCIDR"},
		"bad podCIDR":       {node("a", map[string]string{ann.PublicIP: "192.0.2.5"}, "198.18.5.0"), v4, `podCIDR "198.18.5.0" is not a CIDR`},
		"three podCIDRs":    {node("a", nil, "198.18.5.0/24", "2001:db8::/64", "198.18.6.0/24"), v4, "3 podCIDRs"},
		"two IPv4 podCIDRs": {node("a", nil, "198.18.5.0/24", "198.18.6.0/24"), v4, "two of one address family"},
		"no IPv6 podCIDR":   {node("a", map[string]string{ann.PublicIP: "192.0.2.5"}, "198.18.5.0/24"), dual, "no IPv6 podCIDR"},
	} {
		if _, err := ann.NodeLease(c.n, c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, c.want)
		}
	}
}

func TestNodePublicIPs(t *testing.T) {
	ip4, ip6, err := ann.NodePublicIPs(node("n", map[string]string{ann.NodePublicIP: "203.0.113.9"}))
	if err != nil || ip4.String() != "203.0.113.9" || ip6.IsValid() {
		t.Fatalf("%v %v %v", ip4, ip6, err)
	}
	if _, _, err := ann.NodePublicIPs(node("n", map[string]string{ann.NodePublicIPv6: "192.0.2.1"})); err == nil {
		t.Fatal("an IPv4 node-public-ipv6 was accepted")
	}
}

// FuzzNodeLease feeds arbitrary annotation values and podCIDRs: never a
// panic, and a lease that parses is published back as the same lease.
func FuzzNodeLease(f *testing.F) {
	f.Add("192.0.2.2", "vxlan", `{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}`, "198.18.2.0/24", "", true)
	f.Add("192.0.2.3", "host-gw", "null", "198.18.3.0/24", "2001:db8:100::/64", false)
	f.Add("192.0.2.4", "", "", "198.18.4.5/24", "", true)
	f.Add("x", "udp", "[", "2001:db8::/64", "198.18.0.0/16", true)
	f.Fuzz(func(t *testing.T, publicIP, typ, data, cidr1, cidr2 string, managed bool) {
		a := map[string]string{ann.PublicIP: publicIP, ann.BackendType: typ, ann.BackendData: data}
		if managed {
			a[ann.SubnetKubeManaged] = "true"
		}
		cidrs := []string{cidr1}
		if cidr2 != "" {
			cidrs = append(cidrs, cidr2)
		}
		n := node("fuzz", a, cidrs...)
		cfg := &subnet.Config{EnableIPv4: true}
		l, err := ann.NodeLease(n, cfg)
		if err != nil || l.Attrs.BackendType == "vxlan" && l.Attrs.BackendData == nil {
			return // flanneld publishes no IPv4 side for vxlan without data
		}
		back := node("fuzz", ann.Published(l.Attrs, node("empty", nil)), cidrs...)
		l2, err := ann.NodeLease(back, cfg)
		if err != nil {
			t.Fatalf("published lease does not parse: %v (annotations %v)", err, back.Annotations)
		}
		if l2.Subnet != l.Subnet || !l2.Attrs.Equal(l.Attrs) {
			t.Fatalf("round trip: %+v became %+v", l, l2)
		}
	})
}

// FuzzNodeAnnotations is the annotation parser's fuzz target, both
// families and the user's overwrites: whatever a peer or a user writes on
// a node, NodeLease, Overwrites and Published never panic; a lease that
// parses has masked subnets and public addresses of their families; what
// Published writes as public-ip (public-ipv6) is always an address of the
// family, never an overwrite that is not one; and a parsed lease
// published back parses as the same lease.
func FuzzNodeAnnotations(f *testing.F) {
	f.Add("192.0.2.2", "2001:db8:0:1::2", "", "", "vxlan", `{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}`, `{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}`,
		"198.18.2.0/24", "2001:db8:100:2::/64", true)
	f.Add("192.0.2.3", "", "zz", "", "", "null", "", "198.18.3.0/24", "2001:db8:100:3::/64", true)
	f.Add("192.0.2.4", "2001:db8:0:1::4", "203.0.113.4", "192.0.2.4", "host-gw", "null", "null", "198.18.4.5/22", "2001:db8:100::/48", false)
	f.Add("::ffff:192.0.2.5", "fe80::1%eth0", "2001:db8::5", "::ffff:1.2.3.4", "vxlan", "[1,2]", "{", "::ffff:198.18.0.0/120", "198.18.5.0/24", true)
	f.Fuzz(func(t *testing.T, publicIP, publicIPv6, overwrite, overwrite6, typ, data, data6, cidr1, cidr2 string, dual bool) {
		a := map[string]string{ann.SubnetKubeManaged: "true", ann.PublicIP: publicIP, ann.PublicIPv6: publicIPv6,
			ann.BackendType: typ, ann.BackendData: data, ann.BackendV6Data: data6,
			ann.PublicIPOverwrite: overwrite, ann.PublicIPv6Overwrite: overwrite6}
		cidrs := []string{cidr1}
		if cidr2 != "" {
			cidrs = append(cidrs, cidr2)
		}
		n := node("fuzz", a, cidrs...)
		cfg := &subnet.Config{EnableIPv4: true, EnableIPv6: dual}
		oerr := ann.Overwrites(n, true, true)
		for _, o := range []struct {
			v    string
			is4  bool
			name string
		}{{overwrite, true, "public-ip-overwrite"}, {overwrite6, false, "public-ipv6-overwrite"}} {
			ip, err := netip.ParseAddr(o.v)
			valid := err == nil && ip.Zone() == "" && ip.Is4() == o.is4 && !ip.Is4In6()
			if o.v != "" && !valid && oerr == nil {
				t.Fatalf("Overwrites accepted %s %q", o.name, o.v)
			}
		}
		l, err := ann.NodeLease(n, cfg)
		if err != nil {
			return
		}
		if l.Subnet != l.Subnet.Masked() || !l.Subnet.Addr().Is4() || l.Attrs.PublicIP.IsValid() && !l.Attrs.PublicIP.Is4() {
			t.Fatalf("IPv4 half %v via %v", l.Subnet, l.Attrs.PublicIP)
		}
		if dual && (l.IPv6Subnet != l.IPv6Subnet.Masked() || !l.IPv6Subnet.Addr().Is6() || l.IPv6Subnet.Addr().Is4In6() ||
			l.Attrs.PublicIPv6.IsValid() && (!l.Attrs.PublicIPv6.Is6() || l.Attrs.PublicIPv6.Is4In6())) {
			t.Fatalf("IPv6 half %v via %v", l.IPv6Subnet, l.Attrs.PublicIPv6)
		}
		pub := ann.Published(l.Attrs, n)
		for key, is4 := range map[string]bool{ann.PublicIP: true, ann.PublicIPv6: false} {
			v, ok := pub[key]
			if !ok {
				continue
			}
			if ip, err := netip.ParseAddr(v); err != nil || ip.Is4() != is4 || ip.Is4In6() || ip.Zone() != "" {
				t.Fatalf("published %s=%q (overwrites %q, %q)", key, v, overwrite, overwrite6)
			}
		}
		if l.Attrs.BackendType == "vxlan" && l.Attrs.BackendData == nil || dual && !l.Attrs.PublicIPv6.IsValid() ||
			dual && !slices.Contains([]string{"vxlan", "host-gw", "", "wireguard"}, l.Attrs.BackendType) ||
			dual && l.Attrs.BackendType == "wireguard" && l.Attrs.BackendV6Data == nil {
			// As flanneld: no IPv4 side for vxlan without data; an IPv6
			// side only for vxlan, host-gw, wireguard with data (and udp,
			// which carries IPv6 here), and only with a public IPv6.
			return
		}
		back := node("fuzz", ann.Published(l.Attrs, node("empty", nil)), cidrs...)
		l2, err := ann.NodeLease(back, cfg)
		if err != nil {
			t.Fatalf("published lease does not parse: %v (annotations %v)", err, back.Annotations)
		}
		if l2.Subnet != l.Subnet || l2.IPv6Subnet != l.IPv6Subnet || !l2.Attrs.Equal(l.Attrs) {
			t.Fatalf("round trip: %+v became %+v", l, l2)
		}
	})
}

// A public-ip-overwrite that is not an address is never published: the
// node keeps the public IP it has (the last valid value), else its own.
func TestInvalidOverwriteIsNotPublished(t *testing.T) {
	attrs := subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.1"), PublicIPv6: netip.MustParseAddr("2001:db8:0:1::1"), BackendType: "host-gw"}
	for _, bad := range []string{"garbage", "2001:db8::9", "192.0.2.300", " 192.0.2.9"} {
		n := node("n", map[string]string{ann.PublicIPOverwrite: bad, ann.PublicIP: "203.0.113.7"})
		if got := ann.Published(attrs, n)[ann.PublicIP]; got != "203.0.113.7" {
			t.Errorf("overwrite %q: published public-ip %q, want the node's 203.0.113.7 kept", bad, got)
		}
		if got := ann.Published(attrs, node("n", map[string]string{ann.PublicIPOverwrite: bad}))[ann.PublicIP]; got != "192.0.2.1" {
			t.Errorf("overwrite %q on a fresh node: published public-ip %q, want the host's 192.0.2.1", bad, got)
		}
		if err := ann.Overwrites(n, true, false); err == nil || !strings.Contains(err.Error(), ann.PublicIPOverwrite) {
			t.Errorf("overwrite %q: Overwrites = %v, want an error naming the annotation", bad, err)
		}
	}
	n := node("n", map[string]string{ann.PublicIPv6Overwrite: "192.0.2.9"})
	if got := ann.Published(attrs, n)[ann.PublicIPv6]; got != "2001:db8:0:1::1" {
		t.Errorf("IPv4 public-ipv6-overwrite: published public-ipv6 %q", got)
	}
	if ann.Overwrites(n, true, false) != nil || ann.Overwrites(n, true, true) == nil {
		t.Error("an IPv6 overwrite is checked only when IPv6 is published")
	}
}

// Dual stack on udp: the IPv6 side is published (flanneld's udp backend
// has none); a udp node without it, as flanneld or an earlier flannelu
// publish one, is a lease without PublicIPv6, not a malformed one.
func TestUDPDualStack(t *testing.T) {
	attrs := subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.1"), PublicIPv6: netip.MustParseAddr("2001:db8:0:1::1")}
	got := ann.Published(attrs, node("n", nil))
	want := map[string]string{ann.BackendType: "", ann.BackendData: "null", ann.PublicIP: "192.0.2.1",
		ann.BackendV6Data: "null", ann.PublicIPv6: "2001:db8:0:1::1", ann.SubnetKubeManaged: "true"}
	if !equalMaps(got, want) {
		t.Fatalf("udp dual stack publishes %v\nwant %v", got, want)
	}
	dual := &subnet.Config{EnableIPv4: true, EnableIPv6: true}
	l, err := ann.NodeLease(node("n", got, "198.18.1.0/24", "2001:db8:100:1::/64"), dual)
	if err != nil || !l.Attrs.Equal(attrs) || l.IPv6Subnet.String() != "2001:db8:100:1::/64" {
		t.Fatalf("read back: %+v %v", l, err)
	}
	old := node("n", map[string]string{ann.BackendType: "", ann.BackendData: "null", ann.PublicIP: "192.0.2.2"}, "198.18.2.0/24", "2001:db8:100:2::/64")
	if l, err := ann.NodeLease(old, dual); err != nil || l.Attrs.PublicIPv6.IsValid() || l.IPv6Subnet.String() != "2001:db8:100:2::/64" {
		t.Fatalf("udp node without public-ipv6: %+v %v", l, err)
	}
	old.Annotations[ann.BackendType] = "vxlan"
	if _, err := ann.NodeLease(old, dual); err == nil {
		t.Fatal("a vxlan node without public-ipv6 on a dual-stack network was read")
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestAnnotationPatchIsFlanneldsTwoWayPatch: the patch flannelu sends is
// the one flanneld computes with strategicpatch.CreateTwoWayMergePatch
// from the cached node to the node with its annotations set.
func TestAnnotationPatchIsFlanneldsTwoWayPatch(t *testing.T) {
	n := node("n", map[string]string{"example.com/keep": "1", ann.PublicIP: "192.0.2.9", ann.BackendType: "vxlan"}, "198.18.1.0/24")
	want := ann.Published(vxlanAttrs, n)
	got, err := annotationPatch(n, want)
	if err != nil {
		t.Fatal(err)
	}
	mod := n.DeepCopy()
	for k, v := range want {
		mod.Annotations[k] = v
	}
	before, _ := json.Marshal(n)
	after, _ := json.Marshal(mod)
	flanneld, err := strategicpatch.CreateTwoWayMergePatch(before, after, v1.Node{})
	if err != nil {
		t.Fatal(err)
	}
	var a, b any
	json.Unmarshal(got, &a)      //nolint:errcheck // compared below
	json.Unmarshal(flanneld, &b) //nolint:errcheck // compared below
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("patch %s\nflanneld's %s", got, flanneld)
	}
}

// FuzzNewAnnotations: any prefix gives keys that are valid annotation
// keys, or an error; never a panic. Normalising is idempotent: the keys'
// own prefix gives the same keys.
func FuzzNewAnnotations(f *testing.F) {
	for _, s := range []string{DefaultPrefix, "example.com/net", "example.com/net-", "a/b/c", "nodots", "", "/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, prefix string) {
		a, err := NewAnnotations(prefix)
		if err != nil {
			return
		}
		for _, k := range []string{a.SubnetKubeManaged, a.BackendData, a.PublicIPv6Overwrite, a.NodePublicIPv6} {
			if msgs := validation.IsQualifiedName(strings.ToLower(k)); len(msgs) > 0 {
				t.Fatalf("prefix %q: key %q is not a valid annotation key: %v", prefix, k, msgs)
			}
		}
		again, err := NewAnnotations(strings.TrimSuffix(a.PublicIP, "public-ip"))
		if err != nil || again != a {
			t.Fatalf("prefix %q normalised to %q, which gives %v, %v", prefix, strings.TrimSuffix(a.PublicIP, "public-ip"), again, err)
		}
	})
}
