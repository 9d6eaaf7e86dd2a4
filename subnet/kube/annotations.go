package kube

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/flannelu/flannelu/subnet"
)

// DefaultPrefix is flanneld's --kube-annotation-prefix default.
const DefaultPrefix = "flannel.alpha.coreos.com"

// Annotations are the node annotation keys flannel uses under one prefix.
type Annotations struct {
	SubnetKubeManaged   string // "true" on every node a flannel runs on
	BackendType         string
	BackendData         string
	BackendV6Data       string
	PublicIP            string
	PublicIPv6          string
	PublicIPOverwrite   string // set by a user: published instead of the host's public IP
	PublicIPv6Overwrite string
	NodePublicIP        string // set by a user: flannel v0.28's --public-ip for this node
	NodePublicIPv6      string
}

// prefixFormat is flanneld's check of a normalised prefix. Like flanneld's
// it is anchored only at the end.
var prefixFormat = regexp.MustCompile(`(?:[a-z0-9_-]+\.)+[a-z0-9_-]+/(?:[a-z0-9_-]+-)?$`)

// NewAnnotations normalises prefix as flanneld does: without a slash, "/"
// is appended (flannel.alpha.coreos.com/); with one slash not at the end
// and not ending in "-", "-" is appended (example.com/net-); more slashes
// are an error. The keys must also be valid Kubernetes annotation keys.
func NewAnnotations(prefix string) (Annotations, error) {
	switch strings.Count(prefix, "/") {
	case 0:
		prefix += "/"
	case 1:
	default:
		return Annotations{}, fmt.Errorf("annotation prefix %q: at most one slash is allowed", prefix)
	}
	if !strings.HasSuffix(prefix, "/") && !strings.HasSuffix(prefix, "-") {
		prefix += "-"
	}
	if !prefixFormat.MatchString(prefix) {
		return Annotations{}, fmt.Errorf("annotation prefix %q: must be a domain name, optionally followed by /name (lowercase letters, digits, '-', '_', '.')", prefix)
	}
	a := Annotations{
		SubnetKubeManaged:   prefix + "kube-subnet-manager",
		BackendType:         prefix + "backend-type",
		BackendData:         prefix + "backend-data",
		BackendV6Data:       prefix + "backend-v6-data",
		PublicIP:            prefix + "public-ip",
		PublicIPv6:          prefix + "public-ipv6",
		PublicIPOverwrite:   prefix + "public-ip-overwrite",
		PublicIPv6Overwrite: prefix + "public-ipv6-overwrite",
		NodePublicIP:        prefix + "node-public-ip",
		NodePublicIPv6:      prefix + "node-public-ipv6",
	}
	// The longest key: flanneld would only learn of a bad one when the
	// API server refuses its patch.
	if msgs := validation.IsQualifiedName(strings.ToLower(a.PublicIPv6Overwrite)); len(msgs) > 0 {
		return Annotations{}, fmt.Errorf("annotation prefix %q: key %q is not a valid annotation key: %s", prefix, a.PublicIPv6Overwrite, strings.Join(msgs, "; "))
	}
	return a, nil
}

// Managed reports whether a flannel (flanneld or flannelu) published a
// lease on the node.
func (a Annotations) Managed(n *v1.Node) bool {
	return n.Annotations[a.SubnetKubeManaged] == "true"
}

// PodCIDRs returns a node's subnets: spec.podCIDRs (one per family, at
// most two), else spec.podCIDR, masked. Both are zero when none is
// assigned yet.
func PodCIDRs(n *v1.Node) (v4, v6 netip.Prefix, err error) {
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	if len(cidrs) > 2 {
		return v4, v6, fmt.Errorf("node %q has %d podCIDRs %v: at most one IPv4 and one IPv6", n.Name, len(cidrs), cidrs)
	}
	for _, s := range cidrs {
		p, err := netip.ParsePrefix(s)
		if err != nil || p.Addr().Zone() != "" {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("node %q: podCIDR %q is not a CIDR", n.Name, s)
		}
		slot := &v4
		if !p.Addr().Is4() {
			slot = &v6
		}
		if slot.IsValid() {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("node %q: podCIDRs %v: two of one address family", n.Name, cidrs)
		}
		*slot = p.Masked()
	}
	return v4, v6, nil
}

// NodeLease reads the lease a flannel published on a node: the subnets
// of its podCIDRs and the attributes of its annotations, for the families
// cfg enables. Anything missing or malformed is an error naming the
// annotation; a node without the kube-subnet-manager annotation is not an
// error here (see Managed). One exception: a udp node (empty backend type)
// of a dual-stack network without public-ipv6, as flanneld's udp backend
// and earlier flannelu publish it, is a lease without PublicIPv6, whose
// IPv4 half the udp backend uses (as it does the same lease in etcd).
func (a Annotations) NodeLease(n *v1.Node, cfg *subnet.Config) (subnet.Lease, error) {
	v4, v6, err := PodCIDRs(n)
	if err != nil {
		return subnet.Lease{}, err
	}
	l := subnet.Lease{Attrs: subnet.LeaseAttrs{BackendType: n.Annotations[a.BackendType]}}
	if cfg.EnableIPv4 {
		if l.Subnet, l.Attrs.PublicIP, l.Attrs.BackendData, err = a.family(n, v4, a.PublicIP, a.BackendData, true); err != nil {
			return subnet.Lease{}, err
		}
	}
	if cfg.EnableIPv6 {
		_, published := n.Annotations[a.PublicIPv6]
		if l.Attrs.BackendType == "" && cfg.EnableIPv4 && !published && v6.IsValid() {
			l.IPv6Subnet = v6
			return l, nil
		}
		if l.IPv6Subnet, l.Attrs.PublicIPv6, l.Attrs.BackendV6Data, err = a.family(n, v6, a.PublicIPv6, a.BackendV6Data, false); err != nil {
			return subnet.Lease{}, err
		}
	}
	return l, nil
}

// family checks one address family of a node's lease: its podCIDR, its
// public IP annotation and its backend data annotation.
func (a Annotations) family(n *v1.Node, p netip.Prefix, ipKey, dataKey string, is4 bool) (netip.Prefix, netip.Addr, json.RawMessage, error) {
	if !p.IsValid() {
		return p, netip.Addr{}, nil, fmt.Errorf("node %q: no %s podCIDR", n.Name, familyName(is4))
	}
	ip, err := a.address(n, ipKey, is4)
	if err != nil {
		return p, ip, nil, err
	}
	data, err := a.backendData(n, dataKey)
	return p, ip, data, err
}

func familyName(is4 bool) string {
	if is4 {
		return "IPv4"
	}
	return "IPv6"
}

func (a Annotations) address(n *v1.Node, key string, is4 bool) (netip.Addr, error) {
	s, ok := n.Annotations[key]
	if !ok {
		return netip.Addr{}, fmt.Errorf("node %q: annotation %s is missing", n.Name, key)
	}
	ip, err := netip.ParseAddr(s)
	if err != nil || ip.Zone() != "" || ip.Is4() != is4 || ip.Is4In6() {
		return netip.Addr{}, fmt.Errorf("node %q: annotation %s=%q is not an %s address", n.Name, key, s, familyName(is4))
	}
	return ip, nil
}

// backendData returns an annotation's JSON, compact; "null" or absent is
// nil (flanneld writes "null" for host-gw and udp).
func (a Annotations) backendData(n *v1.Node, key string) (json.RawMessage, error) {
	s := n.Annotations[key]
	if s == "" || s == "null" {
		return nil, nil
	}
	var out json.RawMessage
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		return nil, fmt.Errorf("node %q: annotation %s=%q is not JSON: %w", n.Name, key, s, err)
	}
	compact, err := json.Marshal(out) // compact and as flanneld's encoder writes it
	if err != nil {
		return nil, fmt.Errorf("node %q: annotation %s: %w", n.Name, key, err)
	}
	return compact, nil
}

// Published returns the annotations flanneld writes for attrs on node n:
// the backend type and data, the public IP (the node's public-ip-overwrite
// instead, when a user set one), IPv6 likewise when the backend publishes
// IPv6 data, and kube-subnet-manager "true". For udp (no BackendType, as
// flanneld's udp backend) that is backend-type "" and backend-data "null",
// and on a dual-stack network public-ipv6 and backend-v6-data "null" (the
// udp backend carries IPv6, flanneld's does not). An overwrite that is not
// an address of its family is never published: the node keeps the public
// IP it has (see Overwrites).
func (a Annotations) Published(attrs subnet.LeaseAttrs, n *v1.Node) map[string]string {
	bd, v6bd := rawOrNull(attrs.BackendData), rawOrNull(attrs.BackendV6Data)
	out := map[string]string{
		a.BackendType:       attrs.BackendType,
		a.SubnetKubeManaged: "true",
	}
	// flanneld's rules: vxlan publishes its IPv4 side only with data;
	// every other type always. The IPv6 side: vxlan with data, host-gw
	// and udp with a public IPv6 address, wireguard with both.
	if attrs.BackendType != "vxlan" || bd != "null" {
		out[a.BackendData] = bd
		out[a.PublicIP] = a.publicIP(n, a.PublicIP, a.PublicIPOverwrite, ipv4String(attrs.PublicIP), true)
	}
	v6 := attrs.PublicIPv6.IsValid()
	if (attrs.BackendType == "vxlan" && v6bd != "null") || ((attrs.BackendType == "host-gw" || attrs.BackendType == "") && v6) ||
		(attrs.BackendType == "wireguard" && v6bd != "null" && v6) {
		out[a.BackendV6Data] = v6bd
		out[a.PublicIPv6] = a.publicIP(n, a.PublicIPv6, a.PublicIPv6Overwrite, attrs.PublicIPv6.String(), false)
	}
	return out
}

// publicIP is the public address to publish: the user's overwrite when it
// is an address of the family; with an invalid one, the address the node
// has now if that is one (the last valid value), else own.
func (a Annotations) publicIP(n *v1.Node, key, overwriteKey, own string, is4 bool) string {
	if _, set := n.Annotations[overwriteKey]; !set || n.Annotations[overwriteKey] == "" {
		return own
	}
	if ip, err := a.address(n, overwriteKey, is4); err == nil {
		return ip.String()
	}
	if ip, err := a.address(n, key, is4); err == nil {
		return ip.String()
	}
	return own
}

// Overwrites checks the user's public-ip-overwrite (with v4) and
// public-ipv6-overwrite (with v6) of a node: unset or empty (flanneld
// ignores an empty one) is fine, anything else must be an address of its
// family. The error names the annotation and the value.
func (a Annotations) Overwrites(n *v1.Node, v4, v6 bool) error {
	var errs []error
	for _, o := range []struct {
		key       string
		is4, used bool
	}{{a.PublicIPOverwrite, true, v4}, {a.PublicIPv6Overwrite, false, v6}} {
		if !o.used || n.Annotations[o.key] == "" {
			continue
		}
		if _, err := a.address(n, o.key, o.is4); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Differs lists the keys of want whose value on n is not the wanted one.
func Differs(n *v1.Node, want map[string]string) []string {
	var keys []string
	for k, v := range want {
		if got, ok := n.Annotations[k]; !ok || got != v {
			keys = append(keys, k)
		}
	}
	return keys
}

// rawOrNull is what flanneld's json.RawMessage.MarshalJSON writes.
func rawOrNull(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "null"
	}
	return string(raw)
}

// ipv4String writes an unset address as flanneld's zero ip.IP4 does.
func ipv4String(ip netip.Addr) string {
	if !ip.IsValid() {
		return "0.0.0.0"
	}
	return ip.String()
}

// NodePublicIPs returns the node-public-ip and node-public-ipv6 a user set
// on the node (zero when unset): flannel v0.28 uses them as --public-ip and
// --public-ipv6 of that node. A malformed value is an error.
func (a Annotations) NodePublicIPs(n *v1.Node) (ip4, ip6 netip.Addr, err error) {
	var errs []error
	if _, ok := n.Annotations[a.NodePublicIP]; ok {
		ip4, err = a.address(n, a.NodePublicIP, true)
		errs = append(errs, err)
	}
	if _, ok := n.Annotations[a.NodePublicIPv6]; ok {
		ip6, err = a.address(n, a.NodePublicIPv6, false)
		errs = append(errs, err)
	}
	return ip4, ip6, errors.Join(errs...)
}
