package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/flannelu/flannelu/backend/udp"
	"github.com/flannelu/flannelu/backend/vxlan"
	"github.com/flannelu/flannelu/iptables"
	"github.com/flannelu/flannelu/metrics"
	"github.com/flannelu/flannelu/subnet"
)

// peerFilter keeps --iptables-peer-filter's rule set in step with the
// accepted peer leases: UDP to the backend's port only from their public
// IPs (IPv4; the set is iptables, not ip6tables).
type peerFilter struct {
	r    *iptables.Runner
	port int
	last []netip.Addr
	set  bool // a set was installed at least once
	log  *slog.Logger
}

// backendPort is the UDP port the backend receives on, for the filter.
// host-gw carries no UDP, so there is nothing to filter.
func backendPort(cfg *subnet.Config) (int, error) {
	switch cfg.BackendType {
	case "udp":
		c := struct{ Port int }{Port: udp.DefaultPort}
		if len(cfg.Backend) > 0 {
			if err := json.Unmarshal(cfg.Backend, &c); err != nil {
				return 0, fmt.Errorf("udp backend config %s: %w", cfg.Backend, err)
			}
		}
		return c.Port, nil
	case "vxlan":
		c, err := vxlan.ParseConfig(cfg.Backend)
		return c.Port, err
	}
	return 0, fmt.Errorf("--iptables-peer-filter: the %s backend receives no UDP from its peers; there is nothing to filter", cfg.BackendType)
}

// sync installs the set for the accepted peers when it differs from the
// last one. It runs on the watch goroutine before the backend hears of new
// peers, so their datagrams are let in before this host sends to them.
func (f *peerFilter) sync(accepted map[string]subnet.Lease) {
	var ips []netip.Addr
	for _, l := range accepted {
		if l.Attrs.PublicIP.Is4() {
			ips = append(ips, l.Attrs.PublicIP)
		}
	}
	slices.SortFunc(ips, netip.Addr.Compare)
	ips = slices.Compact(ips)
	if f.set && slices.Equal(ips, f.last) {
		return
	}
	if err := f.r.Update(iptables.Peers(f.port, ips)); err != nil {
		f.log.Error("iptables peer filter not updated; the resync tries again", "peers", len(ips), "error", err)
	}
	f.last, f.set = ips, true
}

// newPeerFilter purges what an earlier start's --iptables-peer-filter
// left (its port may have changed, or the flag is off now), then returns
// the filter when the flag is on, with an iptables runner of its own. With
// the flag, an unusable iptables is an error: the operator asked for the
// filter and would otherwise not know it is missing.
func newPeerFilter(o *options, cfg *subnet.Config, reg *metrics.Registry, log *slog.Logger) (*peerFilter, error) {
	if !cfg.EnableIPv4 {
		if o.peerFilter {
			return nil, errors.New("--iptables-peer-filter: the filter is IPv4 (iptables) and the network has no IPv4")
		}
		return nil, nil
	}
	r, err := iptables.New(iptables.Options{Resync: time.Duration(o.iptablesResync) * time.Second, Logger: log, Metrics: reg})
	switch {
	case err != nil && o.peerFilter:
		return nil, fmt.Errorf("--iptables-peer-filter: %w", err)
	case err != nil:
		return nil, nil // no iptables, so no filter left to purge
	}
	if err := r.Purge(iptables.Peers(0, nil)); err != nil {
		if o.peerFilter {
			return nil, fmt.Errorf("--iptables-peer-filter: %w", err)
		}
		log.Warn("could not remove an earlier iptables peer filter", "error", err)
	}
	if !o.peerFilter {
		return nil, nil
	}
	port, err := backendPort(cfg)
	if err != nil {
		return nil, err
	}
	log.Info("iptables peer filter on: UDP to the backend port only from peers", "port", port, "chain", iptables.PeerChain)
	return &peerFilter{r: r, port: port, log: log}, nil
}
