package subnet

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// MakeSubnetKey returns the last element of a lease key in flannel's form:
// 198.18.40.0-24, or 198.18.40.0-24&fc00::-64 for dual stack. For an
// IPv6-only lease the IPv4 part is 0.0.0.0-0, as flanneld writes it.
func MakeSubnetKey(sn, sn6 netip.Prefix) string {
	var b strings.Builder
	if sn.IsValid() {
		b.WriteString(sn.Addr().String())
		b.WriteByte('-')
		b.WriteString(strconv.Itoa(sn.Bits()))
	} else {
		b.WriteString("0.0.0.0-0")
	}
	if sn6.IsValid() {
		b.WriteByte('&')
		b.WriteString(sn6.Addr().String())
		b.WriteByte('-')
		b.WriteString(strconv.Itoa(sn6.Bits()))
	}
	return b.String()
}

// ParseSubnetKey parses a lease key, either its last element or the whole
// etcd key (everything up to the last '/' is ignored). It accepts only the
// canonical form MakeSubnetKey writes, with masked prefixes, so that parse
// and make round-trip exactly. sn is the zero Prefix for an IPv6-only key.
func ParseSubnetKey(key string) (sn, sn6 netip.Prefix, err error) {
	name := key[strings.LastIndexByte(key, '/')+1:]
	v4s, v6s, dual := strings.Cut(name, "&")
	if v4s == "0.0.0.0-0" && !dual {
		return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("lease key %q: names no subnet", key)
	}
	if v4s != "0.0.0.0-0" || !dual {
		if sn, err = parseKeyPrefix(v4s, true); err != nil {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("lease key %q: %w", key, err)
		}
	}
	if dual {
		if sn6, err = parseKeyPrefix(v6s, false); err != nil {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("lease key %q: %w", key, err)
		}
	}
	return sn, sn6, nil
}

func parseKeyPrefix(s string, is4 bool) (netip.Prefix, error) {
	i := strings.LastIndexByte(s, '-')
	if i < 0 {
		return netip.Prefix{}, fmt.Errorf("%q: want <address>-<length>", s)
	}
	a, err := netip.ParseAddr(s[:i])
	if err != nil || a.Is4() != is4 || a.Zone() != "" || a.Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q: bad address", s)
	}
	n, err := strconv.Atoi(s[i+1:])
	if err != nil || n < 0 || n > a.BitLen() || strconv.Itoa(n) != s[i+1:] {
		return netip.Prefix{}, fmt.Errorf("%q: bad prefix length", s)
	}
	p := netip.PrefixFrom(a, n)
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%q: host bits set (network address is %s)", s, p.Masked().Addr())
	}
	if a.String() != s[:i] {
		return netip.Prefix{}, fmt.Errorf("%q: address not in canonical form %s", s, a)
	}
	return p, nil
}
