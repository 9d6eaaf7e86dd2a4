// Package vxlan is flannel's vxlan backend: the kernel's VXLAN devices
// carry pod traffic, and this package only programs them (neighbour, fdb
// and route per peer) through netlink, exactly as flanneld lays them out,
// so a flanneld and a flannelu node share one overlay. As in flanneld, the
// IPv4 network runs on flannel.<VNI> over the IPv4 underlay and the IPv6
// network on flannel-v6.<VNI> over the IPv6 underlay, each with its own
// VTEP MAC (BackendData, BackendV6Data); a dual-stack node has both, an
// IPv6-only node only the second.
//
// Ownership: everything on the devices is ours (routes of the main table,
// permanent neighbours, fdb entries); with DirectRouting also the gateway
// routes on the external interface whose destination lies strictly inside
// an overlay network. The reconcile loop deletes entries we own that match
// no current peer and never touches anything else.
package vxlan

import (
	"log/slog"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/flannelu/flannelu/internal/metrics"
)

// Options configure New.
type Options struct {
	Network           netip.Prefix  // the IPv4 overlay, e.g. 198.18.0.0/16; zero for an IPv6-only network
	IPv6Network       netip.Prefix  // the IPv6 overlay, e.g. 2001:db8:100::/48; zero without IPv6
	BackendJSON       []byte        // the network config's Backend object
	ReconcileInterval time.Duration // default 10s
	Logger            *slog.Logger  // default slog.Default()
	// Netlink is the handle all kernel changes go through; its namespace
	// is the one programmed (tests pass netlink.NewHandleAt(ns)). nil
	// means the caller's network namespace. The Backend does not close it.
	Netlink *netlink.Handle
	// Metrics receives flannelu_peer_errors_total (PeerErrors); nil
	// exports it nowhere.
	Metrics *metrics.Registry
}
