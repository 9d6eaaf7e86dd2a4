package backend

import (
	"fmt"
	"net/netip"

	"github.com/flannelu/flannelu/subnet"
)

// CheckPeer says whether a peer lease has the half network's family needs:
// a subnet and a public address of that family. Everything else about a
// lease (its subnet strictly inside the network, no overlap with this
// host's or an earlier peer's, a usable public address, backend data this
// backend can use) is the daemon's subnet.Validator's rule, the same for
// every backend: backends see only the leases it accepted. A dual-stack
// lease may still lack its IPv6 public address (the Validator requires
// PublicIPv6 only on an IPv6-only network); then only its IPv4 half is
// programmed.
func CheckPeer(network netip.Prefix, l subnet.Lease) error {
	f := FamilyOf(network.Addr())
	if _, err := PeerSubnet(network, l); err != nil {
		return err
	}
	if public := f.PublicIP(l); !f.Contains(public) {
		field := "PublicIP"
		if f.Is6() {
			field = "PublicIPv6"
		}
		return fmt.Errorf("lease %s %v is not an %s address", field, public, f)
	}
	return nil
}

// PeerSubnet is a peer lease's subnet of network's family, or an error
// when it has none: the half of CheckPeer that the udp backend, which
// carries either family over either underlay, asks of its IPv4 half.
func PeerSubnet(network netip.Prefix, l subnet.Lease) (netip.Prefix, error) {
	f := FamilyOf(network.Addr())
	sn := f.Subnet(l)
	if !sn.IsValid() || !f.Contains(sn.Addr()) {
		return netip.Prefix{}, fmt.Errorf("lease has no %s subnet (%v)", f, sn)
	}
	return sn, nil
}
