package daemon

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/flannelu/flannelu/backend/udp"
	"github.com/flannelu/flannelu/backend/vxlan"
	"github.com/flannelu/flannelu/internal/metrics"
	"github.com/flannelu/flannelu/internal/rules/iptables"
	"github.com/flannelu/flannelu/subnet"
)

// peerFilter keeps --iptables-peer-filter's rule sets in step with the
// accepted peer leases: UDP to the backend's port only from their public
// IPs, in iptables for the IPv4 underlay and ip6tables for the IPv6 one,
// for each family the network carries.
type peerFilter struct {
	families []*peerFamily
	port     int
	log      *slog.Logger
}

// peerFamily is the filter of one underlay family.
type peerFamily struct {
	r    *iptables.Runner
	last []netip.Addr
	set  bool // a set was installed at least once
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

// sync installs, per family, the set for the accepted peers when it
// differs from the last one. It runs on the watch goroutine before the
// backend hears of new peers, so their datagrams are let in before this
// host sends to them.
func (f *peerFilter) sync(accepted map[string]subnet.Lease) {
	for _, fam := range f.families {
		v6 := fam.r.IPv6()
		var ips []netip.Addr
		for _, l := range accepted {
			if ip := publicIP(l.Attrs, v6); ip.IsValid() {
				ips = append(ips, ip)
			}
		}
		slices.SortFunc(ips, netip.Addr.Compare)
		ips = slices.Compact(ips)
		if fam.set && slices.Equal(ips, fam.last) {
			continue
		}
		if err := fam.r.Update(peerSet(v6, f.port, ips)); err != nil {
			f.log.Error("iptables peer filter not updated; the resync tries again", "ipv6", v6, "peers", len(ips), "error", err)
		}
		fam.last, fam.set = ips, true
	}
}

// publicIP is a lease's public address of one family, if it has one.
func publicIP(a subnet.LeaseAttrs, v6 bool) netip.Addr {
	ip := a.PublicIP
	if v6 {
		ip = a.PublicIPv6
	}
	if ip.IsValid() && ip.Is6() == v6 {
		return ip
	}
	return netip.Addr{}
}

func peerSet(v6 bool, port int, peers []netip.Addr) iptables.Set {
	if v6 {
		return iptables.Peers6(port, peers)
	}
	return iptables.Peers(port, peers)
}

// newPeerFilter purges what an earlier start's --iptables-peer-filter
// left in either family (its port may have changed, or the flag is off
// now), then returns the filter when the flag is on, with an iptables
// runner of its own per family the network carries. With the flag, an
// unusable iptables (ip6tables) is an error: the operator asked for the
// filter and would otherwise not know it is missing.
func newPeerFilter(o *Options, cfg *subnet.Config, reg *metrics.Registry, log *slog.Logger) (*peerFilter, error) {
	f := &peerFilter{log: log}
	for _, v6 := range []bool{false, true} {
		carried := cfg.EnableIPv4 && !v6 || cfg.EnableIPv6 && v6
		r, err := purgedRunner(o, v6, carried, reg, log)
		if err != nil {
			return nil, err
		}
		if r != nil && o.peerFilter && carried {
			f.families = append(f.families, &peerFamily{r: r})
		}
	}
	if !o.peerFilter {
		return nil, nil
	}
	var err error
	if f.port, err = backendPort(cfg); err != nil {
		return nil, err
	}
	log.Info("iptables peer filter on: UDP to the backend port only from peers", "port", f.port, "chain", iptables.PeerChain,
		"families", len(f.families))
	return f, nil
}

// purgedRunner returns a runner for one family's tables with any peer
// filter an earlier start left there removed; nil, without an error, when
// that family's iptables cannot be used and the filter does not need it
// (the flag is off, or the network does not carry the family).
func purgedRunner(o *Options, v6, carried bool, reg *metrics.Registry, log *slog.Logger) (*iptables.Runner, error) {
	needed := o.peerFilter && carried
	r, err := iptables.New(iptables.Options{Resync: time.Duration(o.iptablesResync) * time.Second, Logger: log, Metrics: reg, IPv6: v6})
	switch {
	case err != nil && needed:
		return nil, fmt.Errorf("--iptables-peer-filter: %w", err)
	case err != nil:
		return nil, nil // no iptables, so no filter left to purge
	}
	if err := r.Purge(peerSet(v6, 0, nil)); err != nil {
		if needed {
			return nil, fmt.Errorf("--iptables-peer-filter: %w", err)
		}
		log.Warn("could not remove an earlier iptables peer filter", "ipv6", v6, "error", err)
	}
	return r, nil
}
