package daemon

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/internal/metrics"
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

// withdrawPeers removes every accepted peer from the backend, which takes
// out the routes, neighbours and fdb entries it made for them: for a host
// the store removed from the network (subnet.ErrHostRemoved), which keeps
// no lease to keep them current. Called after the backend stopped.
func withdrawPeers(be backend.Backend, valid *subnet.Validator, log *slog.Logger) {
	accepted := valid.Accepted()
	var evs []subnet.Event
	for key, l := range accepted {
		evs = append(evs, subnet.Event{Type: subnet.EventRemoved, Lease: l, Key: key})
	}
	be.HandleEvents(context.Background(), evs)
	log.Info("this host was removed from the network: removed the routes and forwarding entries to its peers", "peers", len(evs))
}
