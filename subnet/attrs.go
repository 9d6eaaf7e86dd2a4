package subnet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
)

// wireAttrs is flannel's LeaseAttrs on the wire: field order, a PublicIPv6
// that is always present (null when unset) and omitempty on the backend
// fields. encoding/json writes struct fields in declaration order, which is
// what makes the output byte-for-byte flanneld's.
type wireAttrs struct {
	PublicIP      string
	PublicIPv6    *string
	BackendType   string          `json:",omitempty"`
	BackendData   json.RawMessage `json:",omitempty"`
	BackendV6Data json.RawMessage `json:",omitempty"`
}

// MarshalLeaseAttrs encodes attrs as the value stored at a lease key, e.g.
// {"PublicIP":"192.0.2.1","PublicIPv6":null} for udp. PublicIP must be an
// IPv4 address; it may be unset only for an IPv6-only host (written as
// 0.0.0.0, as flanneld does).
func MarshalLeaseAttrs(a LeaseAttrs) ([]byte, error) {
	w := wireAttrs{
		BackendType:   a.BackendType,
		BackendData:   a.BackendData,
		BackendV6Data: a.BackendV6Data,
	}
	switch {
	case a.PublicIP.Is4():
		w.PublicIP = a.PublicIP.String()
	case !a.PublicIP.IsValid() && a.PublicIPv6.Is6():
		w.PublicIP = "0.0.0.0"
	default:
		return nil, fmt.Errorf("lease: PublicIP %v: must be an IPv4 address", a.PublicIP)
	}
	if a.PublicIPv6.IsValid() {
		if !a.PublicIPv6.Is6() || a.PublicIPv6.Is4In6() {
			return nil, fmt.Errorf("lease: PublicIPv6 %v: must be an IPv6 address", a.PublicIPv6)
		}
		s := a.PublicIPv6.String()
		w.PublicIPv6 = &s
	}
	b, err := json.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("lease: BackendData or BackendV6Data is not valid JSON: %w", err)
	}
	return b, nil
}

// ParseLeaseAttrs decodes and validates a lease value written by flanneld
// or flannelu. PublicIP must be IPv4 (0.0.0.0 only with a PublicIPv6);
// PublicIPv6, when not null, must be IPv6. BackendData and BackendV6Data
// are kept as compact copies that do not alias data.
func ParseLeaseAttrs(data []byte) (LeaseAttrs, error) {
	var w wireAttrs
	if err := json.Unmarshal(data, &w); err != nil {
		return LeaseAttrs{}, fmt.Errorf("lease: invalid JSON: %w", err)
	}
	var a LeaseAttrs
	if w.PublicIPv6 != nil {
		ip6, err := netip.ParseAddr(*w.PublicIPv6)
		if err != nil || !ip6.Is6() || ip6.Is4In6() || ip6.Zone() != "" {
			return LeaseAttrs{}, fmt.Errorf("lease: PublicIPv6 %q: not an IPv6 address", *w.PublicIPv6)
		}
		a.PublicIPv6 = ip6
	}
	ip, err := netip.ParseAddr(w.PublicIP)
	if err != nil || !ip.Is4() {
		return LeaseAttrs{}, fmt.Errorf("lease: PublicIP %q: not an IPv4 address", w.PublicIP)
	}
	if ip.IsUnspecified() {
		if !a.PublicIPv6.IsValid() {
			return LeaseAttrs{}, errors.New("lease: PublicIP 0.0.0.0 without a PublicIPv6: no address to reach the host")
		}
	} else {
		a.PublicIP = ip
	}
	a.BackendType = w.BackendType
	a.BackendData = compactJSON(w.BackendData)
	a.BackendV6Data = compactJSON(w.BackendV6Data)
	return a, nil
}

// compactJSON returns raw as json.Marshal writes a RawMessage (and so as
// flanneld writes it): compact and HTML-escaped. Absent or null is nil, so
// equal values compare equal with bytes.Equal.
func compactJSON(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var compact, escaped bytes.Buffer
	if json.Compact(&compact, raw) != nil {
		return append(json.RawMessage(nil), raw...) // already validated by Unmarshal; unreachable
	}
	json.HTMLEscape(&escaped, compact.Bytes())
	return escaped.Bytes()
}

// Equal reports whether two attribute sets publish the same thing; it is
// how a rewritten lease is told apart from a real change.
func (a LeaseAttrs) Equal(b LeaseAttrs) bool {
	return a.PublicIP == b.PublicIP && a.PublicIPv6 == b.PublicIPv6 &&
		a.BackendType == b.BackendType &&
		bytes.Equal(compactJSON(a.BackendData), compactJSON(b.BackendData)) &&
		bytes.Equal(compactJSON(a.BackendV6Data), compactJSON(b.BackendV6Data))
}
