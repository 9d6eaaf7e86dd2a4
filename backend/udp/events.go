package udp

import (
	"context"
	"net/netip"
	"time"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/encap"
	"github.com/flannelu/flannelu/routetable"
	"github.com/flannelu/flannelu/subnet"
)

// HandleEvents turns a batch of peer lease changes into a new route table
// snapshot. A lease of another backend type is ignored with a warning, as
// flanneld's backends do: that host listens for vxlan or nothing, not for
// our UDP (or IPIP); a peer whose lease changes to another type is
// removed, as the kernel backends remove it.
//
// A snapshot is built whole (O(n): at 5,000 peers about 2 ms and 850 KB),
// so in a burst of single events the builds are paced: when the last one
// took over a millisecond, the next comes publishGap times its duration
// after it (at most maxPublishWait), with every change made meanwhile.
func (b *Backend) HandleEvents(_ context.Context, events []subnet.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ev := range events {
		l := ev.Lease
		p, problem := b.peerOf(l)
		id := p.ID()
		if _, seen := b.touched[id]; !seen {
			b.touched[id] = b.peers[id] // the value in the table
		}
		switch {
		case ev.Type == subnet.EventRemoved:
			delete(b.peers, id)
		case !b.carries(l.Attrs.BackendType):
			// As the kernel backends: the host no longer speaks our wire,
			// so what was programmed for it goes.
			delete(b.peers, id)
			b.log.Warn("ignoring a peer lease of another backend type", "subnet", id, "type", l.Attrs.BackendType)
		case problem != "":
			b.log.Warn("ignoring a peer lease "+problem, "subnet", l.Subnet, "ipv6_subnet", l.IPv6Subnet)
		default:
			b.peers[id] = p
		}
	}
	b.publishSoon()
}

// publishGap is how many build durations separate two paced builds, and
// maxPublishWait the longest a change waits for its build (a build slowed
// by a loaded machine must not make the next wait longer still).
const (
	publishGap     = 20
	maxPublishWait = 100 * time.Millisecond
)

// publishSoon publishes the touched peers now, or schedules that when
// the last build was slow and recent. Callers hold b.mu.
func (b *Backend) publishSoon() {
	if len(b.touched) == 0 || b.publishTimer != nil {
		return
	}
	wait := 0 * time.Second
	if b.lastBuild > time.Millisecond {
		wait = time.Until(b.lastPublish.Add(min(publishGap*b.lastBuild, maxPublishWait)))
	}
	if wait <= 0 {
		b.publish()
		return
	}
	b.publishTimer = time.AfterFunc(wait, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.publishTimer = nil
		b.publish()
	})
}

// publish puts the net effect of the touched peers into one snapshot: an
// add then a remove of one subnet leaves it absent. Each peer is logged
// as the table takes it. Callers hold b.mu.
func (b *Backend) publish() {
	var add []routetable.Peer
	var remove []netip.Prefix
	for prefix, old := range b.touched {
		now, ok := b.peers[prefix]
		switch {
		case ok && now != old:
			add = append(add, now)
		case !ok && (old.PublicIP.IsValid() || old.PublicIPv6.IsValid()):
			remove = append(remove, prefix)
		}
	}
	if len(add) == 0 && len(remove) == 0 {
		clear(b.touched)
		return
	}
	start := time.Now()
	if err := b.routes.Update(add, remove); err != nil {
		b.log.Warn("some peers were not added to the route table", "error", err)
	}
	b.lastPublish = time.Now()
	b.lastBuild = b.lastPublish.Sub(start)
	for _, p := range remove {
		old := b.touched[p]
		b.log.Info("peer removed", "subnet", old.Subnet, "ipv6_subnet", old.Subnet6, "public_ip", old.PublicIP)
	}
	for _, p := range add {
		what := "peer added"
		if old := b.touched[p.ID()]; old.PublicIP.IsValid() || old.PublicIPv6.IsValid() {
			what = "peer changed"
		}
		b.log.Info(what, "subnet", p.Subnet, "ipv6_subnet", p.Subnet6, "public_ip", p.PublicIP, "public_ipv6", p.PublicIPv6)
	}
	clear(b.touched)
}

// carries reports whether a peer lease of backendType speaks this
// backend's wire: flanneld's udp backend writes no type, the ipip one
// "ipip".
func (b *Backend) carries(backendType string) bool {
	if b.opts.Encap == encap.IPIP {
		return backendType == "ipip"
	}
	return backendType == "" || backendType == "udp"
}

// peerOf is the route-table entry of a lease: the subnets of the families
// the network carries (IPv6 only with a PublicIPv6) and the public
// addresses, or why the lease cannot be one. Its ID names it whatever the
// problem (for removals). Each family's half is read as every backend
// reads it (backend.Family, backend.CheckPeer); an IPv4 half needs no
// IPv4 public address, since IPv4 pods may travel over an IPv6 underlay.
func (b *Backend) peerOf(l subnet.Lease) (routetable.Peer, string) {
	p := routetable.Peer{Port: uint16(b.port)}
	if b.opts.Network.IsValid() {
		p.Subnet, _ = backend.PeerSubnet(b.opts.Network, l)
	}
	if a := backend.IPv4.PublicIP(l); backend.IPv4.Contains(a) && !a.IsUnspecified() {
		p.PublicIP = a
	}
	if a := backend.IPv6.PublicIP(l); backend.IPv6.Contains(a) && !a.IsUnspecified() {
		p.PublicIPv6 = a
	}
	// IPv6 pods only behind a lease with a PublicIPv6: flanneld's udp
	// backend publishes none, and its proxy would take an IPv6 packet for
	// IPv4 and mangle it (README). Its IPv6 subnet is then no route here.
	if b.opts.Network6.IsValid() && backend.CheckPeer(b.opts.Network6, l) == nil && p.PublicIPv6.IsValid() {
		p.Subnet6 = l.IPv6Subnet
	}
	switch {
	case !p.Subnet.IsValid() && !p.Subnet6.IsValid():
		return p, "without a subnet of the network's families"
	case !p.PublicIP.IsValid() && !p.PublicIPv6.IsValid():
		return p, "without a public address"
	}
	return p, ""
}
