package subnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Config is the network config stored at <prefix>/config, after defaults
// and validation. ParseConfig is the only way to get a valid one.
type Config struct {
	EnableIPv4, EnableIPv6 bool

	Network              netip.Prefix // masked, e.g. 198.18.0.0/16
	SubnetLen            int          // length of each host's subnet
	SubnetMin, SubnetMax netip.Addr   // first and last allocatable subnet (network addresses)

	IPv6Network                  netip.Prefix
	IPv6SubnetLen                int
	IPv6SubnetMin, IPv6SubnetMax netip.Addr

	BackendType string          // Backend.Type in lower case (flanneld matches it so); "udp" when Backend is absent
	Backend     json.RawMessage // the whole Backend object, for the backend's own options

	// EnableNFTables: the masquerade and forward rules go in nftables
	// (tables flannel-ipv4 and flannel-ipv6) instead of iptables, as
	// flanneld v0.28 does.
	EnableNFTables bool
}

// rawConfig mirrors flannel's JSON. Pointers tell "absent" from zero.
type rawConfig struct {
	EnableIPv4     *bool
	EnableIPv6     bool
	Network        string
	SubnetLen      int
	SubnetMin      string
	SubnetMax      string
	IPv6Network    string
	IPv6SubnetLen  int
	IPv6SubnetMin  string
	IPv6SubnetMax  string
	Backend        json.RawMessage
	EnableNFTables bool
}

// family holds the bounds that differ between the IPv4 and IPv6 checks, so
// both run through the same validation with field names in the errors.
type family struct {
	is4                   bool
	netField, lenField    string
	minField, maxField    string
	bits                  int // 32 or 128
	maxSubnetLen          int // 30: room for network, gateway and one pod; 126 for v6
	defaultLen, maxDefLen int // 24/22 for v4, 64/62 for v6
}

var (
	v4 = family{true, "Network", "SubnetLen", "SubnetMin", "SubnetMax", 32, 30, 24, 22}
	v6 = family{false, "IPv6Network", "IPv6SubnetLen", "IPv6SubnetMin", "IPv6SubnetMax", 128, 126, 64, 62}
)

// ParseConfig parses and validates the JSON at <prefix>/config with
// flanneld's defaults. Unknown fields are ignored, as flanneld does. An
// unmasked Network (198.18.1.0/16) is masked to 198.18.0.0/16, because
// flanneld's net.ParseCIDR does the same. Each invalid config gets one
// error naming the field and its value.
func ParseConfig(data []byte) (*Config, error) {
	return parseConfig(data, func(c *Config, raw *rawConfig) (err error) {
		if c.EnableIPv4 {
			c.Network, c.SubnetLen, c.SubnetMin, c.SubnetMax, err = v4.check(raw.Network, raw.SubnetLen, raw.SubnetMin, raw.SubnetMax)
			if err != nil {
				return err
			}
		}
		if c.EnableIPv6 {
			c.IPv6Network, c.IPv6SubnetLen, c.IPv6SubnetMin, c.IPv6SubnetMax, err = v6.check(raw.IPv6Network, raw.IPv6SubnetLen, raw.IPv6SubnetMin, raw.IPv6SubnetMax)
		}
		return err
	})
}

// ParseKubeConfig parses net-conf.json as flanneld's Kubernetes mode
// (--kube-subnet-mgr) does: the same JSON, but each node's podCIDR is its
// subnet, so SubnetLen, SubnetMin and SubnetMax (and their IPv6 forms) are
// ignored rather than checked; flanneld checks them only against etcd.
// Network (IPv6Network) must still be a CIDR of its family when that
// family is enabled: it is what a podCIDR is checked against. SubnetLen
// and IPv6SubnetLen stay 0, which the Validator reads as "any length":
// the podCIDRs are as long as kube-controller-manager makes them.
func ParseKubeConfig(data []byte) (*Config, error) {
	return parseConfig(data, func(c *Config, raw *rawConfig) (err error) {
		if c.EnableIPv4 {
			if c.Network, err = v4.network(raw.Network); err != nil {
				return err
			}
		}
		if c.EnableIPv6 {
			c.IPv6Network, err = v6.network(raw.IPv6Network)
		}
		return err
	})
}

// parseConfig is the part both modes share: the JSON, the enabled
// families and the backend; networks fills in and checks the networks.
func parseConfig(data []byte, networks func(*Config, *rawConfig) error) (*Config, error) {
	var raw rawConfig
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("config: invalid JSON: %w", err)
	}
	c := &Config{EnableIPv4: raw.EnableIPv4 == nil || *raw.EnableIPv4, EnableIPv6: raw.EnableIPv6, EnableNFTables: raw.EnableNFTables}
	if !c.EnableIPv4 && !c.EnableIPv6 {
		return nil, errors.New("config: EnableIPv4 and EnableIPv6 are both false: enable at least one")
	}
	if err := networks(c, &raw); err != nil {
		return nil, err
	}
	c.Backend = raw.Backend
	var err error
	if c.BackendType, err = backendType(raw.Backend); err != nil {
		return nil, err
	}
	return c, nil
}

func backendType(be json.RawMessage) (string, error) {
	if len(be) == 0 || string(be) == "null" {
		return "udp", nil // flanneld's fallback
	}
	var bt struct{ Type string }
	if err := json.Unmarshal(be, &bt); err != nil {
		return "", fmt.Errorf("config: Backend %s: must be an object with a string Type: %w", be, err)
	}
	if bt.Type == "" {
		return "", fmt.Errorf("config: Backend %s: Type is missing", be)
	}
	// flanneld's backend manager lower-cases the name: "VXLAN" is vxlan.
	return strings.ToLower(bt.Type), nil
}

// check validates one family's network, subnet length and range, filling
// in flanneld's defaults.
func (f family) check(network string, subnetLen int, minS, maxS string) (netip.Prefix, int, netip.Addr, netip.Addr, error) {
	var none netip.Addr
	p, err := f.network(network)
	if err != nil {
		return p, 0, none, none, err
	}
	if subnetLen == 0 {
		subnetLen, err = f.defaultSubnetLen(p)
		if err != nil {
			return p, 0, none, none, err
		}
	} else if lo := p.Bits() + 2; subnetLen < lo || subnetLen > f.maxSubnetLen {
		// +2: the network must hold at least four subnets, since the first is never used.
		if lo > f.maxSubnetLen {
			return p, 0, none, none, fmt.Errorf("config: %s %d: %s %s is too small for any subnet length (longest allowed network /%d)", f.lenField, subnetLen, f.netField, p, f.maxSubnetLen-2)
		}
		return p, 0, none, none, fmt.Errorf("config: %s %d: must be between %d and %d for %s %s", f.lenField, subnetLen, lo, f.maxSubnetLen, f.netField, p)
	}
	size := u128{lo: 1}.shl(uint(f.bits - subnetLen))
	base := toU128(p.Addr())
	end := base.add(u128{lo: 1}.shl(uint(f.bits - p.Bits()))) // first address after the network
	minA, err := f.bound(f.minField, minS, p, subnetLen, base.add(size))
	if err != nil {
		return p, 0, none, none, err
	}
	maxA, err := f.bound(f.maxField, maxS, p, subnetLen, end.sub(size))
	if err != nil {
		return p, 0, none, none, err
	}
	if toU128(maxA).less(toU128(minA)) {
		return p, 0, none, none, fmt.Errorf("config: %s %s: must not be below %s %s", f.maxField, maxA, f.minField, minA)
	}
	return p, subnetLen, minA, maxA, nil
}

// network parses the family's Network field, masked.
func (f family) network(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, fmt.Errorf("config: %s is missing", f.netField)
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || p.Addr().Is4() != f.is4 || p.Addr().Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("config: %s %q: not an %s CIDR", f.netField, s, f.familyName())
	}
	return p.Masked(), nil
}

func (f family) familyName() string {
	if f.is4 {
		return "IPv4"
	}
	return "IPv6"
}

func (f family) defaultSubnetLen(p netip.Prefix) (int, error) {
	switch {
	case p.Bits() > f.maxSubnetLen-2:
		return 0, fmt.Errorf("config: %s %s: too small, the longest useful prefix is /%d", f.netField, p, f.maxSubnetLen-2)
	case p.Bits() <= f.maxDefLen:
		return f.defaultLen, nil
	}
	return p.Bits() + 2, nil
}

// bound parses SubnetMin or SubnetMax, or returns def when it is absent.
func (f family) bound(field, s string, p netip.Prefix, subnetLen int, def u128) (netip.Addr, error) {
	if s == "" {
		return def.addr(f.is4), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Is4() != f.is4 || a.Zone() != "" {
		return a, fmt.Errorf("config: %s %q: not an %s address", field, s, f.familyName())
	}
	if !p.Contains(a) {
		return a, fmt.Errorf("config: %s %s: not inside %s %s", field, a, f.netField, p)
	}
	if netip.PrefixFrom(a, subnetLen).Masked().Addr() != a {
		return a, fmt.Errorf("config: %s %s: not aligned to %s %d", field, a, f.lenField, subnetLen)
	}
	return a, nil
}

// maxIndex caps the number of candidate subnets considered, so a huge
// IPv6 range stays countable in an int.
const maxIndex = 1 << 30

// SubnetCount is how many subnets the allocator may hand out: the IPv4
// range, or the IPv6 range for IPv6 only, or the smaller of the two for
// dual stack (subnet i of one family pairs with subnet i of the other).
func (c *Config) SubnetCount() int {
	n := maxIndex
	if c.EnableIPv4 {
		n = min(n, rangeCount(c.SubnetMin, c.SubnetMax, 32-c.SubnetLen))
	}
	if c.EnableIPv6 {
		n = min(n, rangeCount(c.IPv6SubnetMin, c.IPv6SubnetMax, 128-c.IPv6SubnetLen))
	}
	return n
}

func rangeCount(lo, hi netip.Addr, hostBits int) int {
	d := toU128(hi).sub(toU128(lo)).shr(uint(hostBits))
	if d.hi != 0 || d.lo >= maxIndex {
		return maxIndex
	}
	return int(d.lo) + 1
}

// SubnetAt returns the i-th allocatable subnet pair, 0 <= i < SubnetCount().
// A disabled family's prefix is the zero Prefix.
func (c *Config) SubnetAt(i int) (sn, sn6 netip.Prefix) {
	if c.EnableIPv4 {
		a := toU128(c.SubnetMin).add(u128{lo: uint64(i)}.shl(uint(32 - c.SubnetLen)))
		sn = netip.PrefixFrom(a.addr(true), c.SubnetLen)
	}
	if c.EnableIPv6 {
		a := toU128(c.IPv6SubnetMin).add(u128{lo: uint64(i)}.shl(uint(128 - c.IPv6SubnetLen)))
		sn6 = netip.PrefixFrom(a.addr(false), c.IPv6SubnetLen)
	}
	return sn, sn6
}

// SubnetIndex is the index i for which SubnetAt(i) holds p (either
// family's half of the pair), if p is one this config may hand out.
func (c *Config) SubnetIndex(p netip.Prefix) (int, bool) {
	switch {
	case !p.IsValid():
		return 0, false
	case p.Addr().Is4() && c.EnableIPv4 && inRange(p, c.SubnetLen, c.SubnetMin, c.SubnetMax):
		i := rangeCount(c.SubnetMin, p.Addr(), 32-c.SubnetLen) - 1
		return i, i < c.SubnetCount()
	case p.Addr().Is6() && c.EnableIPv6 && inRange(p, c.IPv6SubnetLen, c.IPv6SubnetMin, c.IPv6SubnetMax):
		i := rangeCount(c.IPv6SubnetMin, p.Addr(), 128-c.IPv6SubnetLen) - 1
		return i, i < c.SubnetCount()
	}
	return 0, false
}

// Fits reports whether a lease's subnets are ones this config could have
// handed out: the right families, lengths, and inside SubnetMin..SubnetMax.
// A lease that does not fit (the network was reconfigured) is not reused.
func (c *Config) Fits(sn, sn6 netip.Prefix) bool {
	if c.EnableIPv4 != sn.IsValid() || c.EnableIPv6 != sn6.IsValid() {
		return false
	}
	if c.EnableIPv4 && !inRange(sn, c.SubnetLen, c.SubnetMin, c.SubnetMax) {
		return false
	}
	if c.EnableIPv6 && !inRange(sn6, c.IPv6SubnetLen, c.IPv6SubnetMin, c.IPv6SubnetMax) {
		return false
	}
	return true
}

func inRange(p netip.Prefix, bits int, lo, hi netip.Addr) bool {
	if p.Bits() != bits || p.Masked() != p || p.Addr().Is4() != lo.Is4() {
		return false
	}
	a := toU128(p.Addr())
	return !a.less(toU128(lo)) && !toU128(hi).less(a)
}
