package subnet

import (
	"cmp"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/flannelu/flannelu/internal/metrics"
)

// ValidatorOptions describe this host, against which peer leases are
// judged.
type ValidatorOptions struct {
	Config *Config
	// Own is this host's lease: events about it are not peers' (the lease
	// keeper looks after it), and no peer may overlap its subnets or use
	// its public addresses.
	Own Lease
	// OwnKey is the store's name of this host's lease (Event.Key, see
	// Store.LeaseKey): its events are the lease keeper's business. Empty:
	// the lease whose subnets are Own's is this host's (etcd, where the
	// subnets name the key).
	OwnKey string
	// OwnAddrs are more addresses of this host no peer may claim (the
	// interface address when --public-ip differs from it).
	OwnAddrs []netip.Addr
	// CheckData is the backend's check of a peer's BackendData and
	// BackendV6Data (vxlan: a unicast VtepMAC), nil when the backend reads
	// none. A write failing it is invalid like any other (BadBackendData).
	CheckData func(Lease) error
	// Metrics receives flannelu_invalid_leases_total{reason}.
	Metrics *metrics.Registry
	Logger  *slog.Logger
}

// Validator stands between a Store's lease events and the backends, the
// same for every store and every backend, which see only the leases it
// accepted and so check none themselves: a peer lease reaches the backends
// only if each subnet the config enables lies strictly inside the network
// with the configured length, its public address is a usable unicast
// address of its family that is not this host's, the backend can use its
// data (CheckData), and its subnets overlap (are equal to, contain or lie
// in) neither this host's nor those of a peer that ranks before it.
// Anything else is skipped with a warning naming the key, the subnet and
// the reason, and counted per reason.
//
// Rules, chosen so that every host decides alike from the same store:
//   - Two leases with overlapping subnets (either family): the one created
//     first keeps its subnet and the other is not used at all (etcd's
//     CreateRevision; a Kubernetes node's creationTimestamp: both the same
//     on every host and across restarts, so a hijacker writing over a live
//     peer's subnet always loses, whatever order the events come in);
//     equal or unknown creation order falls back to key order. A lease
//     that lost blocks no other. When the winner goes, the next in line
//     is used.
//   - A key rewritten with an invalid value keeps its last valid value in
//     the backends, with the write warned about and counted: the invalid
//     value says nothing trustworthy about where the subnet is, the key's
//     owner restores its value within a round trip, and removing the
//     route meanwhile would only cut traffic. A later valid write, or a
//     delete, is applied.
//
// Filter must be called from one goroutine at a time (the watch handler);
// Invalid may be called from any goroutine at any time.
type Validator struct {
	cfg       *Config
	own       Lease
	ownKey    string
	ownAddrs  map[netip.Addr]bool
	checkData func(Lease) error
	log       *slog.Logger

	invalid  [numInvalidReasons]atomic.Uint64
	peers    atomic.Int64      // len(accepted), for the gauge
	entries  map[string]*entry // every key with a valid value, by key
	accepted map[string]Lease  // what the backends have, by key
	held     claims            // the subnets of accepted
	losers   int               // entries that lost their subnet to another
	dirty    map[string]bool   // keys an event touched since the last resolve
}

// entry is a key's last valid value and whether it lost its subnet.
type entry struct {
	lease Lease
	// lostTo is the key holding the subnet this lease also claims, while
	// it does; "" when the lease is accepted.
	lostTo string
}

// NewValidator returns a Validator with no peers yet.
func NewValidator(o ValidatorOptions) *Validator {
	v := &Validator{cfg: o.Config, own: o.Own, ownKey: o.OwnKey, checkData: o.CheckData, log: o.Logger,
		ownAddrs: map[netip.Addr]bool{}, entries: map[string]*entry{}, accepted: map[string]Lease{},
		held: newClaims(), dirty: map[string]bool{}}
	if v.log == nil {
		v.log = slog.Default()
	}
	for _, a := range append([]netip.Addr{o.Own.Attrs.PublicIP, o.Own.Attrs.PublicIPv6}, o.OwnAddrs...) {
		if a.IsValid() {
			v.ownAddrs[a.Unmap()] = true
		}
	}
	vec := o.Metrics.CounterVec("flannelu_invalid_leases_total",
		"Peer lease writes the validator did not use, by reason.", "reason")
	for r := range numInvalidReasons {
		vec.Func(func() uint64 { return v.Invalid(r) }, r.String())
	}
	o.Metrics.GaugeFunc("flannelu_peers", "Peer leases the backend has now: those the validator accepted.",
		func() float64 { return float64(v.peers.Load()) })
	return v
}

// Invalid is how many lease writes were skipped for reason r (an
// overlapping lease counts once each time it loses its subnet).
func (v *Validator) Invalid(r InvalidReason) uint64 {
	if r >= numInvalidReasons {
		return 0
	}
	return v.invalid[r].Load()
}

// Accepted returns the peer leases the backends have now, by key.
func (v *Validator) Accepted() map[string]Lease {
	out := make(map[string]Lease, len(v.accepted))
	for k, l := range v.accepted {
		out[k] = l
	}
	return out
}

// Filter takes one batch of store events and returns the events that bring
// the backends from the accepted peers before it to those after it:
// removals first, then additions and changes, each in key order.
func (v *Validator) Filter(evs []Event) []Event {
	for _, ev := range evs {
		v.apply(ev)
	}
	return v.resolve()
}

func (v *Validator) apply(ev Event) {
	key, l := ev.key(), ev.Lease
	if v.isOwn(key, l) {
		v.log.Debug("own lease event left to the lease keeper", "key", key, "type", ev.Type.String())
		return
	}
	v.dirty[key] = true
	if ev.Type == EventRemoved {
		delete(v.entries, key)
		return
	}
	if r, err := v.check(l); err != nil {
		v.invalid[r].Add(1)
		e, kept := v.entries[key]
		attrs := []any{"key", key, "subnet", l.Subnet, "public_ip", l.Attrs.PublicIP, "reason", r.String(), "error", err}
		if l.IPv6Subnet.IsValid() {
			attrs = append(attrs, "ipv6_subnet", l.IPv6Subnet, "public_ipv6", l.Attrs.PublicIPv6)
		}
		if kept {
			attrs = append(attrs, "keeping_public_ip", e.lease.Attrs.PublicIP)
			v.log.Warn("invalid peer lease write ignored; its last valid value stays in use", attrs...)
			return
		}
		v.log.Warn("invalid peer lease ignored", attrs...)
		return
	}
	if e, ok := v.entries[key]; ok {
		e.lease = l
		return
	}
	v.entries[key] = &entry{lease: l}
}

// isOwn reports whether the event is about this host's lease.
func (v *Validator) isOwn(key string, l Lease) bool {
	if v.ownKey != "" {
		return key == v.ownKey
	}
	return l.Subnet == v.own.Subnet && l.IPv6Subnet == v.own.IPv6Subnet
}

// check is the part of validation that needs no other peer. The first
// failing check names the reason.
func (v *Validator) check(l Lease) (InvalidReason, error) {
	c := v.cfg
	if c.EnableIPv4 {
		if r, err := checkSubnet(l.Subnet, c.Network, c.SubnetLen, "Network", "SubnetLen"); err != nil {
			return r, err
		}
	}
	if c.EnableIPv6 {
		if r, err := checkSubnet(l.IPv6Subnet, c.IPv6Network, c.IPv6SubnetLen, "IPv6Network", "IPv6SubnetLen"); err != nil {
			return r, err
		}
	}
	if r, err := v.checkPublic(l.Attrs.PublicIP, c.EnableIPv4, false, "PublicIP"); err != nil {
		return r, err
	}
	if r, err := v.checkPublic(l.Attrs.PublicIPv6, c.EnableIPv6 && !c.EnableIPv4, true, "PublicIPv6"); err != nil {
		return r, err
	}
	if c.EnableIPv4 && l.Subnet.Overlaps(v.own.Subnet) {
		return OverlapsOwn, fmt.Errorf("subnet %s overlaps this host's %s", l.Subnet, v.own.Subnet)
	}
	if c.EnableIPv6 && l.IPv6Subnet.Overlaps(v.own.IPv6Subnet) {
		return OverlapsOwn, fmt.Errorf("subnet %s overlaps this host's %s", l.IPv6Subnet, v.own.IPv6Subnet)
	}
	if v.checkData != nil {
		if err := v.checkData(l); err != nil {
			return BadBackendData, err
		}
	}
	return 0, nil
}

func checkSubnet(sn, network netip.Prefix, bits int, netField, lenField string) (InvalidReason, error) {
	switch {
	case !sn.IsValid():
		return NoSubnet, fmt.Errorf("no subnet in %s %s", netField, network)
	case sn.Addr().Is4() != network.Addr().Is4() || sn.Bits() < network.Bits() || !network.Contains(sn.Addr()):
		return OutsideNetwork, fmt.Errorf("subnet %s is not inside %s %s", sn, netField, network)
	case bits != 0 && sn.Bits() != bits: // 0: any (Kubernetes mode, see ParseKubeConfig)
		return WrongLength, fmt.Errorf("subnet %s has length %d, %s is %d", sn, sn.Bits(), lenField, bits)
	case sn.Bits() == network.Bits():
		return OutsideNetwork, fmt.Errorf("subnet %s is the whole %s, not a subnet of it", sn, netField)
	case sn.Masked() != sn:
		return OutsideNetwork, fmt.Errorf("subnet %s has host bits set", sn)
	}
	return 0, nil
}

// checkPublic checks one public address of a family; required says the
// config needs it.
func (v *Validator) checkPublic(a netip.Addr, required, v6 bool, field string) (InvalidReason, error) {
	switch {
	case !a.IsValid() && required:
		return BadPublicIP, fmt.Errorf("no %s", field)
	case !a.IsValid():
		return 0, nil
	case a.Is4() == v6 || a.Is4In6():
		return BadPublicIP, fmt.Errorf("%s %s is not an %s address", field, a, map[bool]string{false: "IPv4", true: "IPv6"}[v6])
	case v.ownAddrs[a.Unmap()]:
		return OwnPublicIP, fmt.Errorf("%s %s is this host's own address", field, a)
	}
	if err := UsableUnicast(a); err != nil {
		return BadPublicIP, fmt.Errorf("%s %w", field, err)
	}
	return 0, nil
}

// resolve gives each contested subnet to the lease created first, then
// returns the events from the previous accepted set to the new one. When
// no lease is waiting for a contested subnet and the batch's leases
// overlap nothing held, only the keys the batch touched change: each is
// handled in a few map operations, whatever the number of peers (a burst
// of joins into 5,000 nodes costs per join, not per node). Anything else
// (an overlap, a loser that may now win) ranks every lease again.
func (v *Validator) resolve() []Event {
	dirty := make([]string, 0, len(v.dirty))
	for k := range v.dirty {
		dirty = append(dirty, k)
	}
	clear(v.dirty)
	slices.Sort(dirty)
	if v.losers == 0 {
		if evs, ok := v.resolveTouched(dirty); ok {
			v.peers.Store(int64(len(v.accepted)))
			return evs
		}
	}
	return v.resolveAll()
}

// resolveTouched re-decides only the touched keys; ok is false (and
// nothing changed) when one of them overlaps a held subnet.
func (v *Validator) resolveTouched(keys []string) (evs []Event, ok bool) {
	before := make(map[string]Lease, len(keys))
	for _, k := range keys {
		if l, had := v.accepted[k]; had {
			before[k] = l
			v.release(l)
			delete(v.accepted, k)
		}
	}
	for i, k := range keys {
		e := v.entries[k]
		if e == nil {
			continue
		}
		if v.holderOf(v.held, e.lease) != "" {
			for _, done := range keys[:i] { // undo: back to the state before the batch
				if l, had := v.accepted[done]; had {
					v.release(l)
					delete(v.accepted, done)
				}
			}
			for bk, l := range before {
				v.hold(v.held, l, bk)
				v.accepted[bk] = l
			}
			return nil, false
		}
		v.hold(v.held, e.lease, k)
		v.accepted[k] = e.lease
	}
	return v.diffKeys(keys, before), true
}

// release drops an accepted lease's subnets from held.
func (v *Validator) release(l Lease) {
	if v.cfg.EnableIPv4 {
		v.held.release(l.Subnet, v.cfg.Network.Bits())
	}
	if v.cfg.EnableIPv6 {
		v.held.release(l.IPv6Subnet, v.cfg.IPv6Network.Bits())
	}
}

// resolveAll ranks every lease and rebuilds the accepted set.
func (v *Validator) resolveAll() []Event {
	keys := make([]string, 0, len(v.entries))
	for k := range v.entries {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		return cmp.Or(cmp.Compare(v.entries[a].lease.Created, v.entries[b].lease.Created), cmp.Compare(a, b))
	})
	held := newClaims()
	next := make(map[string]Lease, len(keys))
	v.losers = 0
	for _, k := range keys {
		e := v.entries[k]
		if winner := v.holderOf(held, e.lease); winner != "" {
			v.losers++
			if e.lostTo != winner {
				e.lostTo = winner
				v.invalid[OverlapsPeer].Add(1)
				w := v.entries[winner].lease
				v.log.Warn("invalid peer lease ignored", "key", k, "subnet", e.lease.Subnet, "public_ip", e.lease.Attrs.PublicIP,
					"reason", OverlapsPeer.String(), "error", fmt.Errorf("its subnet %s overlaps %s of the earlier lease %s",
						v.subnets(e.lease), v.subnets(w), winner))
			}
			continue
		}
		if e.lostTo != "" {
			v.log.Info("peer lease used now that the lease holding its subnet is gone", "key", k, "subnet", e.lease.Subnet, "before", e.lostTo)
			e.lostTo = ""
		}
		v.hold(held, e.lease, k)
		next[k] = e.lease
	}
	evs := v.diff(next)
	v.accepted, v.held = next, held
	v.peers.Store(int64(len(next)))
	return evs
}

// subnets names a lease's subnets of the enabled families, for a log line.
func (v *Validator) subnets(l Lease) string {
	var out []string
	if v.cfg.EnableIPv4 {
		out = append(out, l.Subnet.String())
	}
	if v.cfg.EnableIPv6 {
		out = append(out, l.IPv6Subnet.String())
	}
	return strings.Join(out, ",")
}

// holderOf returns the key already holding a subnet that overlaps one of
// l's enabled subnets.
func (v *Validator) holderOf(held claims, l Lease) string {
	if v.cfg.EnableIPv4 {
		if k := held.overlapping(l.Subnet, v.cfg.Network.Bits()); k != "" {
			return k
		}
	}
	if v.cfg.EnableIPv6 {
		return held.overlapping(l.IPv6Subnet, v.cfg.IPv6Network.Bits())
	}
	return ""
}

func (v *Validator) hold(held claims, l Lease, key string) {
	if v.cfg.EnableIPv4 {
		held.hold(l.Subnet, v.cfg.Network.Bits(), key)
	}
	if v.cfg.EnableIPv6 {
		held.hold(l.IPv6Subnet, v.cfg.IPv6Network.Bits(), key)
	}
}

// claims are the subnets accepted so far, which never overlap each other,
// for finding the holder of any subnet that overlaps a new one in a few
// map lookups: the new subnet overlaps a held one exactly when it equals
// or lies in it (a held subnet is one of its prefixes) or contains it (it
// is one of the held subnet's prefixes). Every subnet lies in the network,
// so only prefixes down to the network's length are looked at: 8 for a
// /24 in a /16, whatever the number of peers.
type claims struct {
	held   map[netip.Prefix]string // each held subnet -> its key
	around map[netip.Prefix]int    // each prefix strictly containing held subnets -> how many
}

func newClaims() claims {
	return claims{held: map[netip.Prefix]string{}, around: map[netip.Prefix]int{}}
}

// overlapping returns the key of a held subnet overlapping p, or "".
// netBits is the network's prefix length.
func (c claims) overlapping(p netip.Prefix, netBits int) string {
	for bits := p.Bits(); bits >= netBits; bits-- {
		if k := c.held[netip.PrefixFrom(p.Addr(), bits).Masked()]; k != "" {
			return k
		}
	}
	if c.around[p] == 0 {
		return ""
	}
	// p contains held subnets (a contested subnet: rare): name the lowest.
	var first netip.Prefix
	key := ""
	for h, k := range c.held {
		if h.Bits() > p.Bits() && p.Contains(h.Addr()) && (key == "" || h.Addr().Less(first.Addr())) {
			first, key = h, k
		}
	}
	return key
}

func (c claims) hold(p netip.Prefix, netBits int, key string) {
	c.held[p] = key
	for bits := p.Bits() - 1; bits >= netBits; bits-- {
		c.around[netip.PrefixFrom(p.Addr(), bits).Masked()]++
	}
}

func (c claims) release(p netip.Prefix, netBits int) {
	if _, ok := c.held[p]; !ok {
		return
	}
	delete(c.held, p)
	for bits := p.Bits() - 1; bits >= netBits; bits-- {
		a := netip.PrefixFrom(p.Addr(), bits).Masked()
		if c.around[a]--; c.around[a] <= 0 {
			delete(c.around, a)
		}
	}
}

// diff returns removals, then additions and changes, each in key order. A
// key whose subnets changed is removed and added, because backends key
// their state by subnet.
func (v *Validator) diff(next map[string]Lease) []Event {
	var removed, added []Event
	for _, k := range sortedKeys(v.accepted) {
		old := v.accepted[k]
		now, ok := next[k]
		if !ok || now.Subnet != old.Subnet || now.IPv6Subnet != old.IPv6Subnet {
			removed = append(removed, Event{Type: EventRemoved, Lease: old, Key: k})
		}
	}
	for _, k := range sortedKeys(next) {
		now := next[k]
		old, ok := v.accepted[k]
		switch {
		case !ok || now.Subnet != old.Subnet || now.IPv6Subnet != old.IPv6Subnet:
			added = append(added, Event{Type: EventAdded, Lease: now, Key: k})
		case !now.Attrs.Equal(old.Attrs):
			added = append(added, Event{Type: EventChanged, Lease: now, Key: k})
		}
	}
	return append(removed, added...)
}

// diffKeys is diff for the touched keys alone (sorted), from their
// accepted leases before (absent: not accepted) to v.accepted.
func (v *Validator) diffKeys(keys []string, before map[string]Lease) []Event {
	var removed, added []Event
	for _, k := range keys {
		old, had := before[k]
		now, ok := v.accepted[k]
		switch {
		case had && (!ok || now.Subnet != old.Subnet || now.IPv6Subnet != old.IPv6Subnet):
			removed = append(removed, Event{Type: EventRemoved, Lease: old, Key: k})
			if ok {
				added = append(added, Event{Type: EventAdded, Lease: now, Key: k})
			}
		case !had && ok:
			added = append(added, Event{Type: EventAdded, Lease: now, Key: k})
		case had && ok && !now.Attrs.Equal(old.Attrs):
			added = append(added, Event{Type: EventChanged, Lease: now, Key: k})
		}
	}
	return append(removed, added...)
}

func sortedKeys(m map[string]Lease) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
