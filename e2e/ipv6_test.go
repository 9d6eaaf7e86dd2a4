package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/flannelu/flannelu/internal/rules/iptables"
	"github.com/flannelu/flannelu/testbed"
)

var overlay6 = testbed.PodNetworkV6

// stack is which families a kernel test network has.
type stack struct{ v4, v6 bool }

var (
	ipv4      = stack{v4: true}
	dualStack = stack{v4: true, v6: true}
	ipv6Only  = stack{v6: true}
)

func (s stack) String() string {
	switch s {
	case dualStack:
		return "dual stack"
	case ipv6Only:
		return "IPv6 only"
	}
	return "IPv4"
}

// suffix tells the testbeds of one backend's stacks apart.
func (s stack) suffix() string {
	return map[stack]string{ipv4: "", dualStack: "6", ipv6Only: "6o"}[s]
}

// config is the network config of the stack for backend. IPv4 leases stay
// at or below 198.18.200.0/24 (as udpConfig), so checkForeign's
// 198.18.250.0/24 is never a real host's.
func (s stack) config(backend string) string {
	var fields []string
	if s.v4 {
		fields = append(fields, `"Network":"198.18.0.0/16","SubnetLen":24,"SubnetMax":"198.18.200.0"`)
	} else {
		fields = append(fields, `"EnableIPv4":false`)
	}
	if s.v6 {
		fields = append(fields, fmt.Sprintf(`"EnableIPv6":true,"IPv6Network":%q,"IPv6SubnetLen":64`, overlay6))
	}
	return fmt.Sprintf(`{%s,"Backend":{"Type":%q}}`, strings.Join(fields, ","), backend)
}

// v6Pod is the pod addressed by its IPv6 address, for the helpers that
// reach a pod at its Addr.
func v6Pod(p *testbed.Pod) *testbed.Pod {
	v6 := *p
	v6.Addr = p.Addr6
	return &v6
}

// checkIP6Tables compares host 1's ip6tables chains with flanneld v0.28's
// IPv6 rules for its lease (the cluster runs with --ip-masq), exactly and
// in order, the jumps to them last in the built-in chains (appended, as
// v0.28 appends them); iptables has the IPv4 ones exactly when the network
// has IPv4.
func (k *kernelCluster) checkIP6Tables(t *testing.T) {
	h, own := k.c.Hosts[0], k.leases[1].Subnet6
	for _, s := range []iptables.Set{iptables.Masq(overlay6, own, true), iptables.Forward(overlay6)} {
		want := []string{"-N " + s.Chain}
		jump := ""
		for _, r := range s.Rules {
			if r.Chain == s.Chain {
				want = append(want, r.String())
			} else {
				jump = r.String()
			}
		}
		err := testbed.Eventually(eventDeadline, func() error {
			out, err := h.Run("ip6tables", "-t", s.Table, "-S", s.Chain)
			if got := strings.Split(strings.TrimSpace(out), "\n"); err != nil || !slices.Equal(got, want) {
				return fmt.Errorf("ip6tables -t %s -S %s: %v\n%s\nwant:\n%s", s.Table, s.Chain, err, out, strings.Join(want, "\n"))
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
		builtin := strings.Fields(jump)[1]
		if out := h.MustRun("ip6tables", "-t", s.Table, "-S", builtin); !strings.HasSuffix(out, "\n"+jump+"\n") || strings.Count(out, jump) != 1 {
			t.Errorf("ip6tables -t %s -S %s: the jump is not there once, last:\n%s\nwant last: %s", s.Table, builtin, out, jump)
		}
	}
	if err := testbed.Eventually(eventDeadline, func() error {
		out, err := h.Run("iptables", "-t", "nat", "-S", iptables.MasqChain)
		if k.v4 != (err == nil) {
			return fmt.Errorf("iptables masquerade chain present %v with IPv4 %v:\n%s", err == nil, k.v4, out)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

// linkMAC is the MAC address of h's link dev.
func linkMAC(h *testbed.Host, dev string) (string, error) {
	var links []struct{ Address string }
	if err := ipJSON(h, &links, "ip", "-j", "link", "show", dev); err != nil {
		return "", err
	}
	if len(links) != 1 {
		return "", fmt.Errorf("%s: %d links named %s", h.Name, len(links), dev)
	}
	return links[0].Address, nil
}

// tools is iptables for IPv4 and ip6tables for IPv6, for each family of s.
func (s stack) tools() []string {
	var out []string
	if s.v4 {
		out = append(out, "iptables")
	}
	if s.v6 {
		out = append(out, "ip6tables")
	}
	return out
}
