// Package iptables holds flanneld's iptables rules (masquerade and forward)
// as flanneld v0.28 writes them, and keeps them in place: set up after the
// lease, checked every resync period, brought back rule by rule when they
// drifted (in an order that gives every packet the old or the new verdict,
// never a third), and left in place on exit.
package iptables

import (
	"net/netip"
	"strconv"
	"strings"
)

// flanneld's chains and rule comments. Other tools (and operators' scripts)
// look for these exact names, so they are part of the compatibility.
const (
	MasqChain    = "FLANNEL-POSTRTG"
	ForwardChain = "FLANNEL-FWD"
	masqComment  = "flanneld masq"
	fwdComment   = "flanneld forward"
	// PeerChain is flannelu's own (flanneld has nothing like it).
	PeerChain   = "FLANNELU-PEERS"
	peerComment = "flannelu peers"
	// kubeProxyMark is kube-proxy's masquerade mark: traffic it marked is
	// masqueraded by kube-proxy itself, not a second time here.
	kubeProxyMark = "0x4000/0x4000"
	multicast     = "224.0.0.0/4"
	multicastV6   = "ff00::/8"
)

// Rule is one rule of a Set, in a chain of the Set's table.
type Rule struct {
	Chain string
	// Insert puts the rule first in Chain (-I) instead of last (-A). Only
	// a jump from a built-in chain says where it goes: flannel's own chain
	// holds its rules in the Set's order.
	Insert bool
	Spec   []string
}

// Args is the rule as iptables command arguments after the table: -A (or
// -I for an inserted rule), the chain, then the spec.
func (r Rule) Args() []string {
	op := "-A"
	if r.Insert {
		op = "-I"
	}
	return append([]string{op, r.Chain}, r.Spec...)
}

// String renders the rule as iptables -S prints it, with -I for an
// inserted rule, e.g. `-A FLANNEL-FWD -s 198.18.0.0/16 -m comment
// --comment "flanneld forward" -j ACCEPT`.
func (r Rule) String() string {
	parts := r.Args()
	for i, s := range parts {
		if strings.ContainsAny(s, " \t\"") {
			parts[i] = strconv.Quote(s)
		}
	}
	return strings.Join(parts, " ")
}

// Set is a group of rules kept as a whole, because their order matters: a
// chain of flannel's own (Chain) that holds the set's rules in Chain and
// nothing else (flanneld empties it at each start), and the jumps to it
// from built-in chains, where others' rules live too. A set for an IPv6
// network belongs in ip6tables (IPv6), where flanneld keeps the same
// chains.
type Set struct {
	Name  string // for logs: "masq", "forward" or "peers"; "ipv6 masq" or "ipv6 forward"
	Table string
	Chain string
	Rules []Rule
	IPv6  bool
}

// chainRules are the rules of s in its own chain, in order, as iptables -S
// lists them.
func (s Set) chainRules() []string {
	var out []string
	for _, r := range s.Rules {
		if r.Chain == s.Chain {
			out = append(out, r.String())
		}
	}
	return out
}

// jumps are the rules of s in built-in chains.
func (s Set) jumps() []Rule {
	var out []Rule
	for _, r := range s.Rules {
		if r.Chain != s.Chain {
			out = append(out, r)
		}
	}
	return out
}

// setName names a set of network's family for logs.
func setName(name string, network netip.Prefix) string {
	if network.Addr().Is6() {
		return "ipv6 " + name
	}
	return name
}

// Masq is flanneld v0.28's masquerade set (its masqRules, and masqIP6Rules
// with IPv6 multicast ff00::/8 in place of 224.0.0.0/4) for the flannel
// network and this host's lease, rule for rule and in its order, the jump
// appended to POSTROUTING as v0.28 appends it. randomFully adds
// --random-fully to the MASQUERADE targets, as flanneld does where
// iptables (or ip6tables) supports it and --ip-masq-fully-random-disable
// is not given.
func Masq(network, lease netip.Prefix, randomFully bool) Set {
	n, s := network.String(), lease.String()
	mcast := multicast
	if network.Addr().Is6() {
		mcast = multicastV6
	}
	masq := []string{"-j", "MASQUERADE"}
	if randomFully {
		masq = append(masq, "--random-fully")
	}
	rule := func(match []string, target ...string) Rule {
		spec := append(append(match, "-m", "comment", "--comment", masqComment), target...)
		return Rule{Chain: MasqChain, Spec: spec}
	}
	jump := rule(nil, "-j", MasqChain)
	jump.Chain = "POSTROUTING"
	return Set{Name: setName("masq", network), Table: "nat", Chain: MasqChain, IPv6: network.Addr().Is6(), Rules: []Rule{
		jump,
		rule([]string{"-m", "mark", "--mark", kubeProxyMark}, "-j", "RETURN"),
		// Pod to pod stays unmasqueraded: this host's pods to the
		// overlay, and the overlay to this host's pods.
		rule([]string{"-s", s, "-d", n}, "-j", "RETURN"),
		rule([]string{"-s", n, "-d", s}, "-j", "RETURN"),
		// Outside traffic to this host's own pods keeps its source (the
		// node that owns the pod answers it directly).
		rule([]string{"!", "-s", n, "-d", s}, "-j", "RETURN"),
		// The overlay reaching outside it, except multicast.
		rule([]string{"-s", n, "!", "-d", mcast}, masq...),
		// Host traffic into the overlay leaves with an overlay-routable source.
		rule([]string{"!", "-s", n, "-d", n}, masq...),
	}}
}

// Forward is flanneld's set that accepts overlay traffic in FORWARD, so that
// a FORWARD policy of DROP (Docker sets one) does not cut the pods off; for
// an IPv6 network the same chain in ip6tables. The jump is appended to
// FORWARD, as flanneld v0.28 appends it.
func Forward(network netip.Prefix) Set {
	n := network.String()
	rule := func(match ...string) Rule {
		spec := append(match, "-m", "comment", "--comment", fwdComment, "-j", "ACCEPT")
		return Rule{Chain: ForwardChain, Spec: spec}
	}
	jump := Rule{Chain: "FORWARD", Spec: []string{"-m", "comment", "--comment", fwdComment, "-j", ForwardChain}}
	return Set{Name: setName("forward", network), Table: "filter", Chain: ForwardChain, IPv6: network.Addr().Is6(), Rules: []Rule{
		jump,
		rule("-s", n),
		rule("-d", n),
	}}
}

// Peers is flannelu's opt-in filter on the backend's UDP port: datagrams
// from the peers' public addresses go on through INPUT (RETURN, so the
// host's own firewall still decides), every other datagram to the port is
// dropped. flannel's wire carries no authentication, so the outer source
// address is all there is to filter on (see docs/security.md). The peers are IPv4
// addresses; Peers6 is the same filter for ip6tables.
func Peers(port int, peers []netip.Addr) Set {
	return peerSet(port, peers, false)
}

// Peers6 is Peers for the IPv6 underlay (ip6tables): the peers' public
// IPv6 addresses.
func Peers6(port int, peers []netip.Addr) Set {
	return peerSet(port, peers, true)
}

func peerSet(port int, peers []netip.Addr, v6 bool) Set {
	comment := []string{"-m", "comment", "--comment", peerComment}
	jump := Rule{Chain: "INPUT", Insert: true,
		Spec: append([]string{"-p", "udp", "--dport", strconv.Itoa(port)}, append(comment, "-j", PeerChain)...)}
	rules := []Rule{jump}
	for _, a := range peers {
		rules = append(rules, Rule{Chain: PeerChain, Spec: append([]string{"-s", netip.PrefixFrom(a, a.BitLen()).String()}, append(comment, "-j", "RETURN")...)})
	}
	rules = append(rules, Rule{Chain: PeerChain, Spec: append(comment, "-j", "DROP")})
	return Set{Name: "peers", Table: "filter", Chain: PeerChain, IPv6: v6, Rules: rules}
}
