package main

import (
	"log/slog"
	"net/netip"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/metrics"
	"github.com/flannelu/flannelu/subnet"
)

// newValidator is the one judge of peer leases between the store and the
// backend: this host's lease by the store's name for it, this host's
// addresses, and the backend's rule for its peers' data when it reads any.
func newValidator(cfg *subnet.Config, lease subnet.Lease, store subnet.Store, be backend.Backend, ext *backend.ExternalInterface,
	reg *metrics.Registry, log *slog.Logger) *subnet.Validator {
	var checkData func(subnet.Lease) error
	if dc, ok := be.(backend.DataChecker); ok {
		checkData = dc.CheckLeaseData
	}
	return subnet.NewValidator(subnet.ValidatorOptions{Config: cfg, Own: lease, OwnKey: store.LeaseKey(lease),
		OwnAddrs: []netip.Addr{ext.IfaceAddr, ext.IfaceV6Addr}, CheckData: checkData, Metrics: reg, Logger: log})
}
