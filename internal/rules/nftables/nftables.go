// Package nftables holds flanneld v0.28's nftables rules ("EnableNFTables":
// true in the network config): table flannel-ipv4 (ip) and flannel-ipv6
// (ip6), both always created as flanneld does, each with chain postrtg
// (masquerade, --ip-masq) and chain forward (accept the overlay,
// --iptables-forward-rules) for an enabled family. The rules are written
// through sigs.k8s.io/knftables as flannel's pkg/trafficmngr/nftables
// writes them, so `nft list ruleset` reads the same on a flanneld host
// and a flannelu host. Where flanneld sets them up once, flannelu checks
// them every resync period and sets a family up again when its rules
// changed; they stay in place on exit.
package nftables

import (
	"log/slog"
	"net/netip"
)

// flanneld's names: part of the compatibility (operators and flanneld
// itself look for them).
const (
	TableIPv4    = "flannel-ipv4"
	TableIPv6    = "flannel-ipv6"
	PostrtgChain = "postrtg"
	ForwardChain = "forward"
)

// Family is one address family's rules.
type Family struct {
	// Network is the overlay network and Subnet this host's lease; an
	// invalid Network leaves the family's table empty (the family is off).
	Network, Subnet netip.Prefix
}

// Options choose the rules; Masq and Forward as --ip-masq and
// --iptables-forward-rules.
type Options struct {
	IPv4, IPv6    Family
	Masq, Forward bool
	RandomFully   bool // masquerade fully-random where nftables has it (not --ip-masq-fully-random-disable)
	Logger        *slog.Logger
}
