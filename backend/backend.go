// Package backend defines what every data-path backend (udp, vxlan,
// host-gw) provides to the daemon, and the external interface they share.
package backend

import (
	"context"
	"net"
	"net/netip"

	"github.com/flannelu/flannelu/subnet"
)

// ExternalInterface is the underlay interface the host reaches its peers
// on, with flanneld's field names. Each family's pair is set only when the
// network config enables that family: an IPv6-only host has no IPv4
// addresses here, an IPv4-only host no IPv6 ones.
type ExternalInterface struct {
	Iface       *net.Interface
	IfaceAddr   netip.Addr // the interface's IPv4 address
	IfaceV6Addr netip.Addr // the interface's IPv6 address
	ExtAddr     netip.Addr // the public IPv4 published in the lease (--public-ip, else IfaceAddr)
	ExtV6Addr   netip.Addr // the public IPv6 published in the lease (--public-ipv6, else IfaceV6Addr)
}

// Backend carries pod traffic between hosts for one network.
//
// The daemon calls, in order: Init, (acquires the lease), Start, then Run in
// one goroutine while HandleEvents is called from another; HandleEvents must
// be safe to call concurrently with Run. Events for the host's own lease are
// filtered out by the daemon before they reach a backend.
type Backend interface {
	// Init prepares anything the lease attributes depend on (vxlan creates
	// its device to learn the VTEP MAC) and returns the attributes this
	// host publishes in its lease.
	Init(ctx context.Context) (subnet.LeaseAttrs, error)
	// MTU is the overlay MTU written to subnet.env as FLANNEL_MTU.
	MTU() int
	// Start configures the host for its own lease (device address, the
	// route to the whole network) before any peer event arrives.
	Start(ctx context.Context, own subnet.Lease) error
	// HandleEvents applies peer lease changes: added, changed, removed.
	// The daemon's subnet.Validator has accepted each lease: its subnets
	// lie in the network and overlap no other's, its public address is
	// usable, and its data passes the backend's DataChecker.
	HandleEvents(ctx context.Context, events []subnet.Event)
	// Run forwards or reconciles until ctx is done, then returns nil; any
	// other return is a fatal error for the daemon. Kernel state (routes,
	// neighbours, devices) is left in place on return so that a restart
	// does not interrupt forwarding.
	Run(ctx context.Context) error
}

// Reconciler is implemented by a backend that programs the kernel for
// each peer (vxlan, host-gw): Reconcile makes the kernel match the peers
// it has been given, deleting the entries of peers it does not know. The
// daemon calls it once the first complete snapshot of the leases has been
// handled, before Run: the entries of peers deleted or changed while the
// daemon was down go at start rather than at the first periodic pass.
type Reconciler interface {
	Reconcile(ctx context.Context) error
}

// DataChecker is implemented by a backend that reads data of its own from
// peer leases (vxlan: the VtepMAC). The daemon's subnet.Validator applies
// it to every lease write, so a write the backend could not use is
// refused, counted (bad_backend_data) and the peer's last valid value
// kept, as for any invalid write, in every store.
type DataChecker interface {
	CheckLeaseData(l subnet.Lease) error
}
