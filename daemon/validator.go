package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/internal/metrics"
	"github.com/flannelu/flannelu/subnet"
	"github.com/flannelu/flannelu/subnet/etcd"
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
// the store removed from the network (subnet.ErrHostRemoved) or whose
// subnet another live host now holds (etcd.ErrLeaseTaken). Either way
// this host keeps no lease to keep them current, and its pods' subnet is
// no longer routed to it. Called after the backend stopped; why is the
// error that stopped it.
func withdrawPeers(be backend.Backend, valid *subnet.Validator, log *slog.Logger, why error) {
	accepted := valid.Accepted()
	var evs []subnet.Event
	for key, l := range accepted {
		evs = append(evs, subnet.Event{Type: subnet.EventRemoved, Lease: l, Key: key})
	}
	be.HandleEvents(context.Background(), evs)
	reason := "this host was removed from the network"
	if errors.Is(why, etcd.ErrLeaseTaken) {
		reason = "this host's subnet was taken by another host"
	}
	log.Info(reason+": removed the routes and forwarding entries to its peers", "peers", len(evs))
}
