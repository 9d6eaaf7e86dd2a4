package kernel

import (
	"fmt"
	"net/netip"

	"github.com/flannelu/flannelu/subnet"
)

// CheckPeer validates the parts of a peer lease every kernel backend
// programs: an IPv4 subnet strictly inside the overlay network and a
// valid IPv4 public address. A lease failing it is logged and ignored,
// never programmed: a subnet outside the network would let a peer's etcd
// record reroute arbitrary traffic on this host.
func CheckPeer(network netip.Prefix, l subnet.Lease) error {
	sn := l.Subnet
	if !sn.IsValid() || !sn.Addr().Is4() {
		return fmt.Errorf("lease subnet %v is not an IPv4 prefix", sn)
	}
	if sn.Bits() <= network.Bits() || !network.Contains(sn.Addr()) {
		return fmt.Errorf("lease subnet %v is not inside network %v", sn, network)
	}
	if sn.Masked() != sn {
		return fmt.Errorf("lease subnet %v has host bits set", sn)
	}
	if !l.Attrs.PublicIP.Is4() || l.Attrs.PublicIP.IsUnspecified() {
		return fmt.Errorf("lease PublicIP %v is not a usable IPv4 address", l.Attrs.PublicIP)
	}
	return nil
}

// Owned reports whether a route destination belongs to the overlay: a
// prefix strictly inside network. The network itself and anything
// outside it are never ours.
func Owned(network, dst netip.Prefix) bool {
	return dst.Addr().Is4() && dst.Bits() > network.Bits() && network.Contains(dst.Addr())
}
