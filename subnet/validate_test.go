package subnet

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// validatorFor returns a Validator for this host (198.18.1.0/24 at
// 192.0.2.1, interface 192.0.2.100) and the buffer its log goes to.
func validatorFor(t testing.TB, config string) (*Validator, *bytes.Buffer) {
	t.Helper()
	parse := ParseConfig
	if strings.Contains(config, `"SubnetLen":0`) { // a podCIDR's length is kube-controller-manager's
		parse = ParseKubeConfig
	}
	cfg, err := parse([]byte(config))
	if err != nil {
		t.Fatal(err)
	}
	own := Lease{Attrs: attrs("192.0.2.1")}
	if cfg.EnableIPv4 {
		own.Subnet = netip.MustParsePrefix("198.18.1.0/24")
	}
	if cfg.EnableIPv6 {
		own.IPv6Subnet = netip.MustParsePrefix("2001:db8:100:1::/64")
		own.Attrs.PublicIPv6 = netip.MustParseAddr("2001:db8:0:1::1")
	}
	var log bytes.Buffer
	v := NewValidator(ValidatorOptions{Config: cfg, Own: own, OwnAddrs: []netip.Addr{netip.MustParseAddr("192.0.2.100")},
		Logger: slog.New(slog.NewTextHandler(&log, nil))})
	return v, &log
}

// attrs are the lease attributes of a host at ip.
func attrs(ip string) LeaseAttrs { return LeaseAttrs{PublicIP: netip.MustParseAddr(ip)} }

const v4Config = `{"Network":"198.18.0.0/16","SubnetLen":24}`

// kubeV4Config is v4Config as the Kubernetes store reads it
// (ParseKubeConfig): SubnetLen 0, any podCIDR length.
const kubeV4Config = `{"Network":"198.18.0.0/16","SubnetLen":0}`

// put is an EventAdded for a lease in etcd's key form, created at rev.
func put(subnet, ip string, rev int64) Event {
	sn, sn6, err := ParseSubnetKey(subnet)
	if err != nil {
		panic(err)
	}
	l := Lease{Subnet: sn, IPv6Subnet: sn6, Attrs: attrs(ip), Created: rev}
	return Event{Type: EventAdded, Lease: l, Key: "/coreos.com/network/subnets/" + subnet}
}

func del(ev Event) Event {
	ev.Type = EventRemoved
	return ev
}

// show renders events as "type subnet ip", in the order given.
func show(evs []Event) string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Type.String()+" "+e.Lease.Subnet.String()+" "+e.Lease.Attrs.PublicIP.String())
	}
	return strings.Join(out, ", ")
}

func wantEvents(t *testing.T, got []Event, want string) {
	t.Helper()
	if s := show(got); s != want {
		t.Fatalf("events %q, want %q", s, want)
	}
}

func TestValidatorPassesValidPeers(t *testing.T) {
	v, log := validatorFor(t, v4Config)
	wantEvents(t, v.Filter([]Event{put("198.18.2.0-24", "192.0.2.2", 5), put("198.18.3.0-24", "192.0.2.3", 6)}),
		"added 198.18.2.0/24 192.0.2.2, added 198.18.3.0/24 192.0.2.3")
	changed := put("198.18.2.0-24", "192.0.2.22", 5)
	changed.Type = EventChanged
	wantEvents(t, v.Filter([]Event{changed}), "changed 198.18.2.0/24 192.0.2.22")
	wantEvents(t, v.Filter([]Event{del(put("198.18.3.0-24", "192.0.2.3", 6))}), "removed 198.18.3.0/24 192.0.2.3")
	if log.Len() != 0 {
		t.Fatalf("valid peers logged warnings:\n%s", log)
	}
}

func TestValidatorDropsOwnLease(t *testing.T) {
	v, _ := validatorFor(t, v4Config)
	// Our own key, even overwritten with another host's value: the
	// keeper's business, never a peer, never counted.
	wantEvents(t, v.Filter([]Event{put("198.18.1.0-24", "192.0.2.1", 1), put("198.18.1.0-24", "192.0.2.9", 1)}), "")
	for r := range numInvalidReasons {
		if n := v.Invalid(r); n != 0 {
			t.Fatalf("own lease counted as %s", r)
		}
	}
}

func TestValidatorRejects(t *testing.T) {
	for _, tc := range []struct {
		config, key, ip string
		want            InvalidReason
		inLog           string
	}{
		{v4Config, "203.0.113.0-24", "192.0.2.5", OutsideNetwork, "not inside Network 198.18.0.0/16"},
		{v4Config, "0.0.0.0-0&2001:db8:100:5::-64", "192.0.2.5", NoSubnet, "no subnet"},
		{v4Config, "198.18.5.0-30", "192.0.2.5", WrongLength, "length 30, SubnetLen is 24"},
		{v4Config, "198.18.5.0-25", "192.0.2.5", WrongLength, "length 25"},
		{v4Config, "198.18.0.0-16", "192.0.2.5", WrongLength, "length 16"},
		{v4Config, "198.0.0.0-8", "192.0.2.5", OutsideNetwork, "not inside"},
		{v4Config, "198.18.5.0-24", "127.0.0.1", BadPublicIP, "loopback"},
		{v4Config, "198.18.5.0-24", "224.0.0.5", BadPublicIP, "multicast"},
		{v4Config, "198.18.5.0-24", "169.254.3.4", BadPublicIP, "link-local"},
		{v4Config, "198.18.5.0-24", "255.255.255.255", BadPublicIP, "broadcast"},
		{v4Config, "198.18.5.0-24", "0.1.2.3", BadPublicIP, "0.0.0.0/8"},
		{v4Config, "198.18.5.0-24", "192.0.2.1", OwnPublicIP, "this host's own"},
		{v4Config, "198.18.5.0-24", "192.0.2.100", OwnPublicIP, "this host's own"},
		// Our IPv4 subnet under another key (a dual-stack key form).
		{v4Config, "198.18.1.0-24&2001:db8:100:9::-64", "192.0.2.5", OverlapsOwn, "overlaps this host's 198.18.1.0/24"},
		{`{"EnableIPv6":true,"Network":"198.18.0.0/16","IPv6Network":"2001:db8:100::/48"}`,
			"198.18.5.0-24", "192.0.2.5", NoSubnet, "IPv6Network"},
		{`{"EnableIPv6":true,"Network":"198.18.0.0/16","IPv6Network":"2001:db8:100::/48"}`,
			"198.18.5.0-24&2001:db8:100:5::-80", "192.0.2.5", WrongLength, "IPv6SubnetLen is 64"},
		{`{"EnableIPv6":true,"Network":"198.18.0.0/16","IPv6Network":"2001:db8:100::/48"}`,
			"198.18.5.0-24&2001:db8:100:1::-64", "192.0.2.5", OverlapsOwn, "2001:db8:100:1::/64"},
	} {
		t.Run(tc.key+" "+tc.ip, func(t *testing.T) {
			v, log := validatorFor(t, tc.config)
			ev := put(tc.key, tc.ip, 3)
			wantEvents(t, v.Filter([]Event{ev}), "")
			for r := range numInvalidReasons {
				if want := uint64(0); r == tc.want {
					want = 1
					if v.Invalid(r) != want {
						t.Errorf("Invalid(%s) = %d, want 1", r, v.Invalid(r))
					}
				} else if v.Invalid(r) != 0 {
					t.Errorf("counted as %s, want %s", r, tc.want)
				}
			}
			line := log.String()
			for _, want := range []string{"invalid peer lease", ev.Key, "reason=" + tc.want.String(), tc.inLog} {
				if !strings.Contains(line, want) {
					t.Errorf("log %q lacks %q", line, want)
				}
			}
		})
	}
}

func TestValidatorIPv6Only(t *testing.T) {
	v, _ := validatorFor(t, `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:100::/48"}`)
	ok := Event{Type: EventAdded, Key: "k1", Lease: Lease{IPv6Subnet: netip.MustParsePrefix("2001:db8:100:7::/64"),
		Attrs: LeaseAttrs{PublicIPv6: netip.MustParseAddr("2001:db8:0:1::7")}}}
	noIP := Event{Type: EventAdded, Key: "k2", Lease: Lease{IPv6Subnet: netip.MustParsePrefix("2001:db8:100:8::/64")}}
	linkLocal := Event{Type: EventAdded, Key: "k3", Lease: Lease{IPv6Subnet: netip.MustParsePrefix("2001:db8:100:9::/64"),
		Attrs: LeaseAttrs{PublicIPv6: netip.MustParseAddr("fe80::1")}}}
	// Every IPv6-only lease has the zero IPv4 subnet: only the IPv6 one
	// tells this host's lease from a peer's.
	own := Event{Type: EventAdded, Key: "own", Lease: Lease{IPv6Subnet: netip.MustParsePrefix("2001:db8:100:1::/64"),
		Attrs: LeaseAttrs{PublicIPv6: netip.MustParseAddr("2001:db8:0:1::1")}}}
	if got := v.Filter([]Event{own, ok, noIP, linkLocal}); len(got) != 1 || got[0].Key != "k1" {
		t.Fatalf("accepted %v, want only k1", got)
	}
	if v.Invalid(BadPublicIP) != 2 {
		t.Fatalf("bad_public_ip = %d, want 2", v.Invalid(BadPublicIP))
	}
}

// The lease created first keeps a contested subnet, whatever order the
// events arrive in; the loser comes in when the winner goes.
func TestValidatorOverlapFirstCreatedWins(t *testing.T) {
	early := put("198.18.7.0-24", "192.0.2.7", 10)
	// A second key for the same IPv4 subnet, created later, pointing
	// at a third host.
	late := put("198.18.7.0-24&2001:db8:100:7::-64", "192.0.2.66", 20)
	for _, order := range [][]Event{{early, late}, {late, early}} {
		v, log := validatorFor(t, v4Config)
		wantEvents(t, v.Filter(order), "added 198.18.7.0/24 192.0.2.7")
		if v.Invalid(OverlapsPeer) != 1 || !strings.Contains(log.String(), "overlaps 198.18.7.0/24 of the earlier lease "+early.Key) {
			t.Fatalf("overlaps_peer = %d, log:\n%s", v.Invalid(OverlapsPeer), log)
		}
	}
	// Arriving one batch after the other: the later one never displaces.
	v, _ := validatorFor(t, v4Config)
	wantEvents(t, v.Filter([]Event{early}), "added 198.18.7.0/24 192.0.2.7")
	wantEvents(t, v.Filter([]Event{late}), "")
	// An unrelated batch does not count the standing loser again.
	v.Filter([]Event{put("198.18.9.0-24", "192.0.2.9", 30)})
	if n := v.Invalid(OverlapsPeer); n != 1 {
		t.Fatalf("overlaps_peer = %d after an unrelated batch, want 1", n)
	}
	wantEvents(t, v.Filter([]Event{del(early)}), "removed 198.18.7.0/24 192.0.2.7, added 198.18.7.0/24 192.0.2.66")
	// Created earlier but arriving later (its key was fixed): it wins.
	v2, _ := validatorFor(t, v4Config)
	wantEvents(t, v2.Filter([]Event{late}), "added 198.18.7.0/24 192.0.2.66")
	wantEvents(t, v2.Filter([]Event{early}), "removed 198.18.7.0/24 192.0.2.66, added 198.18.7.0/24 192.0.2.7")
}

func TestValidatorOverlapTieByKey(t *testing.T) {
	a := put("198.18.7.0-24", "192.0.2.7", 0)
	b := put("198.18.7.0-24&2001:db8:100:7::-64", "192.0.2.66", 0)
	for _, order := range [][]Event{{a, b}, {b, a}} {
		v, _ := validatorFor(t, v4Config)
		wantEvents(t, v.Filter(order), "added 198.18.7.0/24 192.0.2.7") // a's key sorts first
	}
}

// An invalid write over an accepted lease keeps the last valid value; a
// later valid write is applied; a delete removes it.
func TestValidatorKeepsLastValidValue(t *testing.T) {
	v, log := validatorFor(t, v4Config)
	good := put("198.18.2.0-24", "192.0.2.2", 5)
	wantEvents(t, v.Filter([]Event{good}), "added 198.18.2.0/24 192.0.2.2")
	bad := good
	bad.Type, bad.Lease.Attrs = EventChanged, attrs("127.0.0.1")
	wantEvents(t, v.Filter([]Event{bad}), "")
	if v.Invalid(BadPublicIP) != 1 || !strings.Contains(log.String(), "keeping_public_ip=192.0.2.2") {
		t.Fatalf("bad_public_ip = %d, log:\n%s", v.Invalid(BadPublicIP), log)
	}
	fixed := good
	fixed.Type, fixed.Lease.Attrs = EventChanged, attrs("192.0.2.22")
	wantEvents(t, v.Filter([]Event{fixed}), "changed 198.18.2.0/24 192.0.2.22")
	wantEvents(t, v.Filter([]Event{del(fixed)}), "removed 198.18.2.0/24 192.0.2.22")
	// A key whose only value was invalid is applied once it is valid.
	first := put("198.18.3.0-24", "127.0.0.1", 8)
	wantEvents(t, v.Filter([]Event{first}), "")
	first.Type, first.Lease.Attrs = EventChanged, attrs("192.0.2.3")
	wantEvents(t, v.Filter([]Event{first}), "added 198.18.3.0/24 192.0.2.3")
}

// A key that changes its subnet (possible in a store keyed by node, not by
// subnet) is removed and added, because backends key routes by subnet.
func TestValidatorSubnetChangeIsRemoveAdd(t *testing.T) {
	v, _ := validatorFor(t, v4Config)
	a := Event{Type: EventAdded, Key: "node-a", Lease: Lease{Subnet: netip.MustParsePrefix("198.18.4.0/24"), Attrs: attrs("192.0.2.4")}}
	v.Filter([]Event{a})
	a.Type, a.Lease.Subnet = EventChanged, netip.MustParsePrefix("198.18.5.0/24")
	wantEvents(t, v.Filter([]Event{a}), "removed 198.18.4.0/24 192.0.2.4, added 198.18.5.0/24 192.0.2.4")
}

func TestUsableUnicast(t *testing.T) {
	for _, s := range []string{"192.0.2.1", "198.51.100.7", "2001:db8:0:1::1", "::ffff:192.0.2.1"} {
		if err := UsableUnicast(netip.MustParseAddr(s)); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	for _, s := range []string{"0.0.0.0", "127.0.0.1", "127.1.2.3", "224.0.0.1", "239.1.1.1", "169.254.1.1",
		"255.255.255.255", "0.0.0.7", "::", "::1", "fe80::1", "ff02::1"} {
		if err := UsableUnicast(netip.MustParseAddr(s)); err == nil {
			t.Errorf("%s accepted", s)
		}
	}
	if err := UsableUnicast(netip.Addr{}); err == nil {
		t.Error("zero Addr accepted")
	}
}

// FuzzValidator feeds random event sequences and checks the invariants:
// the events it emits keep a backend's view equal to Accepted; no two
// accepted leases overlap, none overlaps this host's, each passes the
// checks; and the accepted set is a function of the current leases alone,
// whatever order they came in.
func FuzzValidator(f *testing.F) {
	f.Add([]byte{0, 0, 2, 1, 0, 1, 2, 2, 1, 0, 0, 0})
	f.Add([]byte{0, 3, 7, 4, 0, 4, 7, 5, 2, 3, 7, 4, 0, 5, 1, 1})
	f.Add([]byte{1, 0, 1, 3, 0, 0, 3, 8, 0, 1, 9, 0, 0, 2, 2, 1, 2, 1, 9, 0}) // Kubernetes: nested subnets
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) == 0 {
			return
		}
		// The first byte picks the config: etcd's fixed SubnetLen, or
		// Kubernetes mode's podCIDRs of any length, which can nest.
		config := map[bool]string{false: v4Config, true: kubeV4Config}[ops[0]%2 == 1]
		ops = ops[1:]
		v, _ := validatorFor(t, config)
		backend := map[string]Lease{}
		for i := 0; i+4 <= len(ops) && i < 400; i += 4 {
			ev := fuzzEvent(ops[i : i+4])
			for _, out := range v.Filter([]Event{ev}) {
				applyToBackend(t, backend, out)
			}
			checkAccepted(t, v, backend)
		}
		fresh, _ := validatorFor(t, config)
		var all []Event
		for k, e := range v.entries {
			all = append(all, Event{Type: EventAdded, Lease: e.lease, Key: k})
		}
		slices.Reverse(all)
		fresh.Filter(all)
		if got, want := fmt.Sprint(fresh.Accepted()), fmt.Sprint(v.Accepted()); got != want {
			t.Fatalf("accepted set depends on history:\n%s\nvs fresh\n%s", want, got)
		}
	})
}

// fuzzEvent decodes 4 bytes: type, key, subnet, public IP, each from a
// small set so that collisions (same subnet, same key) are common.
func fuzzEvent(b []byte) Event {
	subnets := []string{"198.18.1.0/24", "198.18.2.0/24", "198.18.3.0/24", "198.18.2.0/25", "203.0.113.0/24",
		"198.18.0.0/16", "198.18.7.0/24", "198.18.1.128/25", "198.18.0.0/22", "198.18.2.128/26", "198.18.6.0/23"}
	ips := []string{"192.0.2.2", "192.0.2.3", "127.0.0.1", "192.0.2.1", "192.0.2.66", "224.0.0.1", "198.51.100.4", "169.254.0.9"}
	typ := []EventType{EventAdded, EventChanged, EventRemoved}[int(b[0])%3]
	sn := netip.MustParsePrefix(subnets[int(b[2])%len(subnets)])
	return Event{Type: typ, Key: fmt.Sprintf("k%d", b[1]%6),
		Lease: Lease{Subnet: sn, Attrs: attrs(ips[int(b[3])%len(ips)]), Created: int64(b[1] % 6)}}
}

func applyToBackend(t *testing.T, backend map[string]Lease, ev Event) {
	_, had := backend[ev.Key]
	switch ev.Type {
	case EventRemoved:
		if !had {
			t.Fatalf("removed %s, which the backend does not have", ev.Key)
		}
		delete(backend, ev.Key)
	case EventAdded:
		if had {
			t.Fatalf("added %s twice", ev.Key)
		}
		backend[ev.Key] = ev.Lease
	case EventChanged:
		if !had {
			t.Fatalf("changed %s, which the backend does not have", ev.Key)
		}
		backend[ev.Key] = ev.Lease
	}
}

func checkAccepted(t *testing.T, v *Validator, backend map[string]Lease) {
	acc := v.Accepted()
	if fmt.Sprint(acc) != fmt.Sprint(backend) {
		t.Fatalf("backend view %v != accepted %v", backend, acc)
	}
	var seen []netip.Prefix
	for k, l := range acc {
		if r, err := v.check(l); err != nil {
			t.Fatalf("accepted %s fails %s: %v", k, r, err)
		}
		if l.Subnet.Overlaps(v.own.Subnet) {
			t.Fatalf("accepted %s overlaps this host", l.Subnet)
		}
		for _, s := range seen {
			if s.Overlaps(l.Subnet) {
				t.Fatalf("accepted %s and %s overlap", s, l.Subnet)
			}
		}
		seen = append(seen, l.Subnet)
	}
}

// TestValidatorKubernetesConfigTakesAnyLength: in Kubernetes mode
// (ParseKubeConfig: SubnetLen 0) a podCIDR is as long as
// kube-controller-manager made it, but must still lie in the network.
func TestValidatorKubernetesConfigTakesAnyLength(t *testing.T) {
	cfg, err := ParseKubeConfig([]byte(`{"Network":"198.18.0.0/16","Backend":{"Type":"vxlan"}}`))
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	v := NewValidator(ValidatorOptions{Config: cfg, Own: Lease{Subnet: netip.MustParsePrefix("198.18.1.0/24"), Attrs: attrs("192.0.2.1")},
		Logger: slog.New(slog.NewTextHandler(&log, nil))})
	wantEvents(t, v.Filter([]Event{put("198.18.2.0-24", "192.0.2.2", 5), put("198.18.4.0-26", "192.0.2.4", 6)}),
		"added 198.18.2.0/24 192.0.2.2, added 198.18.4.0/26 192.0.2.4")
	wantEvents(t, v.Filter([]Event{put("203.0.113.0-24", "192.0.2.5", 7)}), "")
	if v.Invalid(OutsideNetwork) != 1 || v.Invalid(WrongLength) != 0 {
		t.Fatalf("outside_network %d, wrong_length %d; want 1 and 0:\n%s", v.Invalid(OutsideNetwork), v.Invalid(WrongLength), &log)
	}
}

// Nested podCIDRs (Kubernetes mode, any length): a subnet that contains or
// lies in an earlier lease's is refused like an equal one, in either
// family and whatever order the events come in; one that overlaps only a
// loser is used; when the winner goes, the loser comes in.
func TestValidatorNestedSubnetsOlderWins(t *testing.T) {
	node := func(name, sn, ip string, created int64) Event {
		return Event{Type: EventAdded, Key: name, Lease: Lease{Subnet: netip.MustParsePrefix(sn), Attrs: attrs(ip), Created: created}}
	}
	for _, tc := range []struct {
		name           string
		older, younger Event
	}{
		{"the younger contains the older", node("node-8", "198.18.8.0/24", "192.0.2.8", 100), node("node-9", "198.18.8.0/22", "192.0.2.9", 200)},
		{"the younger lies in the older", node("node-4", "198.18.4.0/23", "192.0.2.4", 100), node("node-5", "198.18.5.0/24", "192.0.2.5", 200)},
		{"the older contains the younger", node("node-b", "198.18.8.0/22", "192.0.2.9", 100), node("node-a", "198.18.9.128/25", "192.0.2.8", 200)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := "added " + tc.older.Lease.Subnet.String() + " " + tc.older.Lease.Attrs.PublicIP.String()
			for _, order := range [][]Event{{tc.older, tc.younger}, {tc.younger, tc.older}} {
				v, log := validatorFor(t, kubeV4Config)
				wantEvents(t, v.Filter(order), want)
				if v.Invalid(OverlapsPeer) != 1 || !strings.Contains(log.String(), "key="+tc.younger.Key) {
					t.Fatalf("overlaps_peer = %d, log:\n%s", v.Invalid(OverlapsPeer), log)
				}
			}
			// One batch after the other, the younger first: it is used
			// until the older one appears, then never again.
			v, _ := validatorFor(t, kubeV4Config)
			v.Filter([]Event{tc.younger})
			wantEvents(t, v.Filter([]Event{tc.older}), "removed "+tc.younger.Lease.Subnet.String()+" "+tc.younger.Lease.Attrs.PublicIP.String()+", "+want)
			wantEvents(t, v.Filter([]Event{del(tc.older)}), "removed "+tc.older.Lease.Subnet.String()+" "+tc.older.Lease.Attrs.PublicIP.String()+
				", added "+tc.younger.Lease.Subnet.String()+" "+tc.younger.Lease.Attrs.PublicIP.String())
		})
	}
	// A loser blocks nothing: 198.18.10.0/24 lies in the loser's /22 but
	// not in the winner's /24, so it is used.
	v, _ := validatorFor(t, kubeV4Config)
	wantEvents(t, v.Filter([]Event{node("node-8", "198.18.8.0/24", "192.0.2.8", 100), node("node-9", "198.18.8.0/22", "192.0.2.9", 200),
		node("node-10", "198.18.10.0/24", "192.0.2.10", 300)}),
		"added 198.18.10.0/24 192.0.2.10, added 198.18.8.0/24 192.0.2.8")
	// This host's own subnet nested in a peer's, or a peer's in it.
	for _, sn := range []string{"198.18.0.0/22", "198.18.1.128/25"} {
		v, _ := validatorFor(t, kubeV4Config)
		wantEvents(t, v.Filter([]Event{node("node-x", sn, "192.0.2.20", 1)}), "")
		if v.Invalid(OverlapsOwn) != 1 {
			t.Errorf("%s over this host's 198.18.1.0/24: overlaps_own %d, want 1", sn, v.Invalid(OverlapsOwn))
		}
	}
}

func TestValidatorNestedIPv6(t *testing.T) {
	v, log := validatorFor(t, `{"EnableIPv6":true,"Network":"198.18.0.0/16","IPv6Network":"2001:db8:100::/48","SubnetLen":0,"IPv6SubnetLen":0}`)
	dual := func(name, sn, sn6, ip string, created int64) Event {
		a := attrs(ip)
		a.PublicIPv6 = netip.MustParseAddr("2001:db8:0:1::" + strings.TrimPrefix(ip, "192.0.2."))
		return Event{Type: EventAdded, Key: name, Lease: Lease{Subnet: netip.MustParsePrefix(sn), IPv6Subnet: netip.MustParsePrefix(sn6), Attrs: a, Created: created}}
	}
	// Distinct IPv4 subnets; the younger's IPv6 subnet contains the older's.
	wantEvents(t, v.Filter([]Event{dual("young", "198.18.9.0/24", "2001:db8:100:8::/62", "192.0.2.9", 2),
		dual("old", "198.18.8.0/24", "2001:db8:100:9::/64", "192.0.2.8", 1)}), "added 198.18.8.0/24 192.0.2.8")
	if v.Invalid(OverlapsPeer) != 1 || !strings.Contains(log.String(), "2001:db8:100:9::/64 of the earlier lease old") {
		t.Fatalf("overlaps_peer = %d, log:\n%s", v.Invalid(OverlapsPeer), log)
	}
}

// In a store that names leases by node (Kubernetes), a peer node with
// exactly this host's subnet is a peer overlapping this host: refused,
// logged and counted; only the event of this host's own key is the lease
// keeper's.
func TestValidatorOwnKey(t *testing.T) {
	cfg, err := ParseKubeConfig([]byte(`{"Network":"198.18.0.0/16","Backend":{"Type":"vxlan"}}`))
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	own := Lease{Subnet: netip.MustParsePrefix("198.18.1.0/24"), Attrs: attrs("192.0.2.1")}
	v := NewValidator(ValidatorOptions{Config: cfg, Own: own, OwnKey: "node-1", Logger: slog.New(slog.NewTextHandler(&log, nil))})
	mine := Event{Type: EventAdded, Key: "node-1", Lease: own}
	claim := Event{Type: EventAdded, Key: "node-7", Lease: Lease{Subnet: own.Subnet, Attrs: attrs("192.0.2.7")}}
	wantEvents(t, v.Filter([]Event{mine, claim}), "")
	if v.Invalid(OverlapsOwn) != 1 || !strings.Contains(log.String(), "key=node-7") || strings.Contains(log.String(), "key=node-1") {
		t.Fatalf("overlaps_own = %d, log:\n%s", v.Invalid(OverlapsOwn), &log)
	}
}

// A write the backend cannot use (CheckData) is refused and counted as
// bad_backend_data; over an accepted lease, the last valid value stays.
func TestValidatorBackendData(t *testing.T) {
	cfg, err := ParseConfig([]byte(v4Config))
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	v := NewValidator(ValidatorOptions{Config: cfg, Own: Lease{Subnet: netip.MustParsePrefix("198.18.1.0/24"), Attrs: attrs("192.0.2.1")},
		Logger: slog.New(slog.NewTextHandler(&log, nil)),
		CheckData: func(l Lease) error {
			if string(l.Attrs.BackendData) != `{"ok":true}` {
				return fmt.Errorf("BackendData %s is not ok", l.Attrs.BackendData)
			}
			return nil
		}})
	good := put("198.18.2.0-24", "192.0.2.2", 5)
	good.Lease.Attrs.BackendData = []byte(`{"ok":true}`)
	wantEvents(t, v.Filter([]Event{good}), "added 198.18.2.0/24 192.0.2.2")
	for i, data := range []string{`{"ok":false}`, `[1,2]`, ``} {
		bad := good
		bad.Type = EventChanged
		bad.Lease.Attrs.BackendData = []byte(data)
		bad.Lease.Attrs.PublicIP = netip.MustParseAddr("192.0.2.22")
		wantEvents(t, v.Filter([]Event{bad}), "")
		if v.Invalid(BadBackendData) != uint64(i+1) {
			t.Fatalf("%s: bad_backend_data = %d, want %d", data, v.Invalid(BadBackendData), i+1)
		}
	}
	if !strings.Contains(log.String(), "keeping_public_ip=192.0.2.2") || v.Accepted()[good.Key].Attrs.PublicIP != good.Lease.Attrs.PublicIP {
		t.Fatalf("the last valid value is not kept:\n%s", &log)
	}
}

// Kubernetes mode takes podCIDRs of any length, but never the whole
// network (every other subnet would lie in it), and public addresses must
// be of their field's family.
func TestValidatorKubernetesEdgeCases(t *testing.T) {
	for _, tc := range []struct {
		lease Lease
		want  InvalidReason
	}{
		{Lease{Subnet: netip.MustParsePrefix("198.18.0.0/16"), Attrs: attrs("192.0.2.5")}, OutsideNetwork},
		{Lease{Subnet: netip.PrefixFrom(netip.MustParseAddr("198.18.5.1"), 24), Attrs: attrs("192.0.2.5")}, OutsideNetwork},
		{Lease{Subnet: netip.MustParsePrefix("198.18.5.0/24"), Attrs: LeaseAttrs{PublicIP: netip.MustParseAddr("2001:db8:0:1::5")}}, BadPublicIP},
		{Lease{Subnet: netip.MustParsePrefix("198.18.5.0/24"), Attrs: LeaseAttrs{PublicIP: netip.MustParseAddr("::ffff:192.0.2.5")}}, BadPublicIP},
	} {
		v, _ := validatorFor(t, kubeV4Config)
		wantEvents(t, v.Filter([]Event{{Type: EventAdded, Key: "k", Lease: tc.lease}}), "")
		if v.Invalid(tc.want) != 1 {
			t.Errorf("%v %v: not counted as %s", tc.lease.Subnet, tc.lease.Attrs.PublicIP, tc.want)
		}
	}
}
