// Package vxlan is flannel's vxlan backend: the kernel's VXLAN device
// flannel.<VNI> carries pod traffic, and this package only programs it
// (neighbour, fdb and route per peer) through netlink, exactly as flanneld
// lays it out, so a flanneld and a flannelu node share one overlay.
//
// Ownership: everything on flannel.<VNI> is ours (routes of the main
// table, permanent neighbours, fdb entries); with DirectRouting also the
// gateway routes on the external interface whose destination lies
// strictly inside the overlay network. The reconcile loop deletes
// entries we own that match no current peer and never touches anything
// else.
package vxlan

import (
	"log/slog"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/flannelu/flannelu/metrics"
)

// Options configure New.
type Options struct {
	Network           netip.Prefix  // the whole overlay, e.g. 198.18.0.0/16
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
