// Package hostgw is flannel's host-gw backend: no encapsulation, one
// route per peer and family, `<peer subnet> via <peer PublicIP> dev
// <external iface>` and, with IPv6, `<peer IPv6 subnet> via <peer
// PublicIPv6> dev <external iface>`. It works only when every peer is on
// the same link (layer 2) as this host.
//
// Ownership: a route is ours when it is in the main table, leaves through
// the external interface, has a gateway, and its destination lies strictly
// inside an overlay network (and is not our own subnet). The reconcile
// loop deletes such routes that match no current peer; routes outside the
// network, on other devices, or without a gateway are never touched.
package hostgw

import (
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/flannelu/flannelu/internal/metrics"
)

// BackendType is the lease BackendType this backend publishes and accepts.
const BackendType = "host-gw"

// Options configure New.
type Options struct {
	Network           netip.Prefix  // the IPv4 overlay, e.g. 198.18.0.0/16; zero for an IPv6-only network
	IPv6Network       netip.Prefix  // the IPv6 overlay, e.g. 2001:db8:100::/48; zero without IPv6
	ReconcileInterval time.Duration // default 10s, flannel's
	Logger            *slog.Logger  // default slog.Default()
	// Netlink is the handle all kernel changes go through; its namespace
	// is the one programmed (tests pass netlink.NewHandleAt(ns)). nil
	// means the caller's network namespace. The Backend does not close it.
	Netlink *netlink.Handle
	// Metrics receives flannelu_peer_errors_total (PeerErrors); nil
	// exports it nowhere.
	Metrics *metrics.Registry

	// For another backend's routes of the same shape (the ipip backend's
	// flannel.ipip routes and DirectRouting routes): the lease type
	// accepted (default BackendType), the device the routes leave
	// through (default the external interface; the routes it owns are
	// that device's) and whether they are onlink (the gateway is a peer's
	// public address, not on that device's link).
	LeaseType string
	Device    *net.Interface
	OnLink    bool
}
