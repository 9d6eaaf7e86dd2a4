package subnet

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseConfigDefaults(t *testing.T) {
	tests := []struct {
		json              string
		subnetLen         int
		min, max, backend string
	}{
		{`{"Network":"198.18.0.0/16"}`, 24, "198.18.1.0", "198.18.255.0", "udp"},
		{`{"Network":"198.18.0.0/15","Backend":{"Type":"vxlan","VNI":1}}`, 24, "198.18.1.0", "198.19.255.0", "vxlan"},
		{`{"Network":"198.18.0.0/23"}`, 25, "198.18.0.128", "198.18.1.128", "udp"},
		{`{"Network":"198.18.0.0/28"}`, 30, "198.18.0.4", "198.18.0.12", "udp"},
		// flanneld masks an unmasked Network through net.ParseCIDR; so do we.
		{`{"Network":"198.18.1.0/16","SubnetLen":20}`, 20, "198.18.16.0", "198.18.240.0", "udp"},
		{`{"Network":"198.18.0.0/16","SubnetMin":"198.18.10.0","SubnetMax":"198.18.20.0","Unknown":1}`, 24, "198.18.10.0", "198.18.20.0", "udp"},
	}
	for _, tt := range tests {
		c, err := ParseConfig([]byte(tt.json))
		if err != nil {
			t.Errorf("ParseConfig(%s): %v", tt.json, err)
			continue
		}
		if !c.EnableIPv4 || c.EnableIPv6 || c.SubnetLen != tt.subnetLen ||
			c.SubnetMin.String() != tt.min || c.SubnetMax.String() != tt.max || c.BackendType != tt.backend {
			t.Errorf("ParseConfig(%s) = v4 %v v6 %v len %d min %s max %s backend %s; want len %d min %s max %s backend %s",
				tt.json, c.EnableIPv4, c.EnableIPv6, c.SubnetLen, c.SubnetMin, c.SubnetMax, c.BackendType,
				tt.subnetLen, tt.min, tt.max, tt.backend)
		}
	}
}

func TestParseConfigBackendKept(t *testing.T) {
	c, err := ParseConfig([]byte(`{"Network":"198.18.0.0/16","Backend":{"Type":"udp","Port":8285}}`))
	if err != nil {
		t.Fatal(err)
	}
	if string(c.Backend) != `{"Type":"udp","Port":8285}` {
		t.Fatalf("Backend = %s, want the whole object", c.Backend)
	}
}

func TestParseConfigIPv6(t *testing.T) {
	c, err := ParseConfig([]byte(`{"Network":"198.18.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48"}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.IPv6SubnetLen != 64 || c.IPv6SubnetMin.String() != "fc00:0:0:1::" || c.IPv6SubnetMax.String() != "fc00:0:0:ffff::" {
		t.Fatalf("v6 defaults: len %d min %s max %s", c.IPv6SubnetLen, c.IPv6SubnetMin, c.IPv6SubnetMax)
	}
	if n := c.SubnetCount(); n != 255 {
		t.Fatalf("dual stack SubnetCount = %d, want 255 (the IPv4 range is the smaller)", n)
	}
	sn, sn6 := c.SubnetAt(2)
	if sn.String() != "198.18.3.0/24" || sn6.String() != "fc00:0:0:3::/64" {
		t.Fatalf("SubnetAt(2) = %s %s", sn, sn6)
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct{ json, want string }{
		{`{`, "config: invalid JSON"},
		{`{}`, "config: Network is missing"},
		{`{"Network":"fc00::/48"}`, `config: Network "fc00::/48": not an IPv4 CIDR`},
		{`{"Network":"198.18.0.0"}`, `config: Network "198.18.0.0": not an IPv4 CIDR`},
		{`{"Network":"198.18.0.0/29"}`, "config: Network 198.18.0.0/29: too small, the longest useful prefix is /28"},
		{`{"Network":"198.18.0.0/16","SubnetLen":33}`, "config: SubnetLen 33: must be between 18 and 30 for Network 198.18.0.0/16"},
		{`{"Network":"198.18.0.0/16","SubnetLen":17}`, "config: SubnetLen 17: must be between 18 and 30 for Network 198.18.0.0/16"},
		{`{"Network":"198.18.0.0/16","SubnetLen":-1}`, "config: SubnetLen -1: must be between 18 and 30"},
		{`{"Network":"198.18.0.0/30","SubnetLen":30}`, "too small for any subnet length"},
		{`{"Network":"198.18.0.0/16","SubnetMin":"198.19.0.0"}`, "config: SubnetMin 198.19.0.0: not inside Network 198.18.0.0/16"},
		{`{"Network":"198.18.0.0/16","SubnetMax":"198.18.1.1"}`, "config: SubnetMax 198.18.1.1: not aligned to SubnetLen 24"},
		{`{"Network":"198.18.0.0/16","SubnetMin":"x"}`, `config: SubnetMin "x": not an IPv4 address`},
		{`{"Network":"198.18.0.0/16","SubnetMin":"198.18.9.0","SubnetMax":"198.18.8.0"}`, "config: SubnetMax 198.18.8.0: must not be below SubnetMin 198.18.9.0"},
		{`{"Network":"198.18.0.0/16","SubnetLen":"24"}`, "config: invalid JSON"},
		{`{"EnableIPv4":false}`, "EnableIPv4 and EnableIPv6 are both false"},
		{`{"Network":"198.18.0.0/16","EnableIPv6":true}`, "config: IPv6Network is missing"},
		{`{"Network":"198.18.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/125"}`, "config: IPv6Network fc00::/125: too small, the longest useful prefix is /124"},
		{`{"Network":"198.18.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetLen":127}`, "config: IPv6SubnetLen 127: must be between 50 and 126"},
		{`{"Network":"198.18.0.0/16","Backend":"udp"}`, `config: Backend "udp": must be an object`},
		{`{"Network":"198.18.0.0/16","Backend":{"Port":1}}`, "Type is missing"},
	}
	for _, tt := range tests {
		_, err := ParseConfig([]byte(tt.json))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseConfig(%s) error = %v, want it to contain %q", tt.json, err, tt.want)
		}
	}
}

func TestConfigFits(t *testing.T) {
	c, err := ParseConfig([]byte(`{"Network":"198.18.0.0/16","SubnetMin":"198.18.10.0","SubnetMax":"198.18.20.0"}`))
	if err != nil {
		t.Fatal(err)
	}
	for s, want := range map[string]bool{
		"198.18.10.0/24": true, "198.18.20.0/24": true, "198.18.9.0/24": false,
		"198.18.21.0/24": false, "198.18.10.0/25": false, "198.19.10.0/24": false,
	} {
		if got := c.Fits(netip.MustParsePrefix(s), netip.Prefix{}); got != want {
			t.Errorf("Fits(%s) = %v, want %v", s, got, want)
		}
	}
	if c.Fits(netip.MustParsePrefix("198.18.10.0/24"), netip.MustParsePrefix("fc00::/64")) {
		t.Error("a dual-stack lease fits an IPv4-only config")
	}
}

func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"Network":"198.18.0.0/16"}`,
		`{"Network":"198.18.0.0/28","SubnetLen":30,"SubnetMin":"198.18.0.4"}`,
		`{"Network":"198.18.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetLen":120}`,
		`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/124","Backend":{"Type":"vxlan"}}`,
		`{"Network":"198.18.0.0/16","SubnetLen":-5}`, `[]`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			return
		}
		// A valid config hands out its SubnetMin first and SubnetMax last.
		n := c.SubnetCount()
		if n < 1 {
			t.Fatalf("valid config with %d subnets", n)
		}
		first, first6 := c.SubnetAt(0)
		if !c.Fits(first, first6) {
			t.Fatalf("first subnet %s %s does not fit its config", first, first6)
		}
		last, last6 := c.SubnetAt(n - 1)
		if !c.Fits(last, last6) {
			t.Fatalf("last subnet %s %s does not fit its config", last, last6)
		}
	})
}

// TestKubeConfigIgnoresSubnetRanges: in Kubernetes mode the podCIDR is the
// subnet, so net-conf.json's SubnetLen/Min/Max are not checked (flanneld
// checks them only against etcd), while the networks still are.
func TestKubeConfigIgnoresSubnetRanges(t *testing.T) {
	ok := map[string]string{
		// Invalid for etcd mode, fine for Kubernetes mode.
		`{"Network":"198.18.0.0/16","SubnetLen":31,"SubnetMin":"198.18.0.3","Backend":{"Type":"vxlan"}}`: "198.18.0.0/16 vxlan",
		`{"Network":"198.18.7.0/30"}`: "198.18.7.0/30 udp",
		`{"Network":"198.18.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:100::/48","IPv6SubnetLen":200}`: "198.18.0.0/16 udp",
	}
	for in, want := range ok {
		c, err := ParseKubeConfig([]byte(in))
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if got := c.Network.String() + " " + c.BackendType; got != want {
			t.Errorf("%s: %s, want %s", in, got, want)
		}
		if c.SubnetLen != 0 || c.SubnetMin.IsValid() {
			t.Errorf("%s: SubnetLen %d SubnetMin %v filled in, want them unused", in, c.SubnetLen, c.SubnetMin)
		}
	}
	bad := map[string]string{
		`{"Backend":{"Type":"vxlan"}}`:                     "Network is missing",
		`{"Network":"2001:db8::/32"}`:                      `Network "2001:db8::/32": not an IPv4 CIDR`,
		`{"Network":"198.18.0.0/16","EnableIPv6":true}`:    "IPv6Network is missing",
		`{"EnableIPv4":false}`:                             "both false",
		`{"Network":"198.18.0.0/16","Backend":{"Type":7}}`: "Backend",
		`{"Network":`: "invalid JSON",
	}
	for in, want := range bad {
		if _, err := ParseKubeConfig([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one containing %q", in, err, want)
		}
	}
}

func FuzzParseKubeConfig(f *testing.F) {
	for _, s := range []string{
		`{"Network":"198.18.0.0/16","Backend":{"Type":"vxlan"}}`,
		`{"Network":"198.18.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:100::/48"}`,
		`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:100::/48"}`,
		`{"Network":"198.18.0.0/16","SubnetLen":99}`, `[]`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseKubeConfig(data)
		if err != nil {
			return
		}
		// A valid config has a masked network of the right family for each
		// enabled family (what every podCIDR is checked against) and a type.
		if c.EnableIPv4 && (!c.Network.Addr().Is4() || c.Network.Masked() != c.Network) {
			t.Fatalf("Network %v", c.Network)
		}
		if c.EnableIPv6 && (!c.IPv6Network.Addr().Is6() || c.IPv6Network.Masked() != c.IPv6Network) {
			t.Fatalf("IPv6Network %v", c.IPv6Network)
		}
		if c.BackendType == "" {
			t.Fatal("no backend type")
		}
	})
}

// TestParseConfigAsFlanneldV028: Backend.Type in any case names the
// backend (flanneld lower-cases it), and EnableNFTables is read.
func TestParseConfigAsFlanneldV028(t *testing.T) {
	for in, want := range map[string]string{"VXLAN": "vxlan", "Host-GW": "host-gw", "udp": "udp"} {
		c, err := ParseConfig([]byte(`{"Network":"198.18.0.0/16","Backend":{"Type":"` + in + `"}}`))
		if err != nil || c.BackendType != want || c.EnableNFTables {
			t.Errorf("Type %q: %v, %v (nftables %v), want %q", in, c, err, c != nil && c.EnableNFTables, want)
		}
	}
	c, err := ParseKubeConfig([]byte(`{"Network":"198.18.0.0/16","EnableNFTables":true,"Backend":{"Type":"Vxlan"}}`))
	if err != nil || !c.EnableNFTables || c.BackendType != "vxlan" {
		t.Fatalf("net-conf.json with EnableNFTables: %+v, %v", c, err)
	}
}
