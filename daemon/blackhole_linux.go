package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/backend/kernel"
	"github.com/flannelu/flannelu/subnet"
)

// blackholeKeeper is --ip-blackhole-route: a blackhole route for this
// host's subnet of each enabled family, added when missing every resync
// period as flanneld v0.28 does (for setups without the bridge plugin,
// e.g. Canal, where traffic to an unused pod address would otherwise leave
// by the default route). flannelu adds it at once, where flanneld waits a
// period first.
type blackholeKeeper struct {
	subnets []netip.Prefix
	period  time.Duration
	log     *slog.Logger
	said    map[netip.Prefix]string // the last problem logged per subnet
}

func blackholeRoutes(o *Options, cfg *subnet.Config, lease subnet.Lease, log *slog.Logger) *blackholeKeeper {
	k := &blackholeKeeper{period: time.Duration(o.iptablesResync) * time.Second, log: log, said: map[netip.Prefix]string{}}
	if cfg.EnableIPv4 {
		k.subnets = append(k.subnets, lease.Subnet.Masked())
	}
	if cfg.EnableIPv6 {
		k.subnets = append(k.subnets, lease.IPv6Subnet.Masked())
	}
	return k
}

func (k *blackholeKeeper) Run(ctx context.Context) {
	t := time.NewTicker(k.period)
	defer t.Stop()
	for {
		for _, sn := range k.subnets {
			k.ensure(sn)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ensure adds the blackhole route for sn unless there is one. Another
// route of the same key (the bridge's cni0 route, metric 0) makes the
// kernel refuse it: then there is no need for it, and that is logged once.
func (k *blackholeKeeper) ensure(sn netip.Prefix) {
	family := netlink.FAMILY_V4
	if sn.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	route := netlink.Route{Dst: kernel.IPNet(sn), Type: unix.RTN_BLACKHOLE, Family: family}
	routes, err := netlink.RouteListFiltered(family, &route, netlink.RT_FILTER_DST|netlink.RT_FILTER_TYPE)
	if err == nil && len(routes) > 0 {
		k.said[sn] = ""
		return
	}
	if err == nil {
		if err = netlink.RouteAdd(&route); err == nil {
			k.log.Info("added the blackhole route for this host's subnet", "subnet", sn)
			k.said[sn] = ""
			return
		}
	}
	msg := err.Error()
	if k.said[sn] == msg {
		return
	}
	k.said[sn] = msg
	if errors.Is(err, unix.EEXIST) {
		k.log.Info("no blackhole route: another route to this host's subnet has its place (the bridge's)", "subnet", sn)
		return
	}
	k.log.Error("blackhole route for this host's subnet", "subnet", sn, "error", err)
}
