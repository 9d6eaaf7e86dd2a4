package backend

import (
	"encoding/json"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/subnet"
)

// Family is one address family of a network, as every backend reads it:
// which half of a lease it reads (Subnet, PublicIP and BackendData for
// IPv4; IPv6Subnet, PublicIPv6 and BackendV6Data for IPv6, as flanneld
// reads them) and, for the kernel backends, which netlink family its
// routes, neighbours and addresses live in. A dual-stack backend runs the
// same code once per family.
type Family struct{ v6 bool }

// The two families.
var (
	IPv4 = Family{}
	IPv6 = Family{v6: true}
)

// FamilyOf is the family of an address or prefix's address.
func FamilyOf(a netip.Addr) Family { return Family{v6: a.Is6() && !a.Is4In6()} }

// Is6 reports whether f is IPv6.
func (f Family) Is6() bool { return f.v6 }

func (f Family) String() string {
	if f.v6 {
		return "IPv6"
	}
	return "IPv4"
}

// Netlink is the family's netlink (and socket) address family.
func (f Family) Netlink() int {
	if f.v6 {
		return unix.AF_INET6
	}
	return unix.AF_INET
}

// Bits is the length of a host prefix: 32 or 128.
func (f Family) Bits() int {
	if f.v6 {
		return 128
	}
	return 32
}

// Contains reports whether a is of this family.
func (f Family) Contains(a netip.Addr) bool { return a.IsValid() && FamilyOf(a) == f }

// Subnet is the lease's subnet of this family (zero when it has none).
func (f Family) Subnet(l subnet.Lease) netip.Prefix {
	if f.v6 {
		return l.IPv6Subnet
	}
	return l.Subnet
}

// PublicIP is the lease's public address of this family.
func (f Family) PublicIP(l subnet.Lease) netip.Addr {
	if f.v6 {
		return l.Attrs.PublicIPv6
	}
	return l.Attrs.PublicIP
}

// BackendData is the lease's backend data for this family: BackendData
// or BackendV6Data.
func (f Family) BackendData(l subnet.Lease) json.RawMessage {
	if f.v6 {
		return l.Attrs.BackendV6Data
	}
	return l.Attrs.BackendData
}
