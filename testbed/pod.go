package testbed

import (
	"fmt"
	"net/netip"
	"strconv"
)

// AddPods does what flannel's CNI plugin and the bridge plugin it
// delegates to do for n new containers: a cni0 bridge that holds the
// subnet's first address (FLANNEL_SUBNET), and per pod a namespace with
// eth0 on the bridge, the next free address of the subnet, the overlay MTU
// (FLANNEL_MTU) and a default route via the bridge.
func (h *Host) AddPods(n int, gateway netip.Prefix, mtu int) error {
	if !gateway.Addr().Is4() {
		return fmt.Errorf("testbed: pod gateway %v is not IPv4", gateway)
	}
	m := strconv.Itoa(mtu)
	if len(h.Pods) == 0 {
		if _, err := h.Run("ip", "link", "show", "cni0"); err != nil {
			for _, args := range [][]string{
				{"ip", "link", "add", "cni0", "mtu", m, "type", "bridge"},
				{"ip", "addr", "add", gateway.String(), "dev", "cni0"},
				{"ip", "link", "set", "cni0", "up"},
			} {
				if _, err := h.Run(args...); err != nil {
					return err
				}
			}
		}
	}
	for i := 0; i < n; i++ {
		idx := len(h.Pods) + 1
		addr := gateway.Addr()
		for j := 0; j < idx; j++ {
			addr = addr.Next()
		}
		ns, err := h.bed.addNS(fmt.Sprintf("h%dp%d", h.Index, idx))
		if err != nil {
			return err
		}
		ns.CPUs = h.CPUs // a pod runs on its host's CPUs
		pod := &Pod{NS: ns, Addr: addr}
		hostEnd := fmt.Sprintf("veth%d", idx)
		steps := [][]string{
			{"ip", "link", "add", hostEnd, "mtu", m, "type", "veth", "peer", "name", "eth0", "netns", pod.Name},
			{"ip", "link", "set", hostEnd, "master", "cni0", "up"},
		}
		for _, args := range steps {
			if _, err := h.Run(args...); err != nil {
				return err
			}
		}
		podSteps := [][]string{
			{"sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1", "net.ipv4.conf.default.rp_filter=1"},
			{"ip", "addr", "add", netip.PrefixFrom(addr, gateway.Bits()).String(), "dev", "eth0"},
			{"ip", "link", "set", "eth0", "up"},
			{"ip", "route", "add", "default", "via", gateway.Addr().String()},
		}
		for _, args := range podSteps {
			if _, err := pod.Run(args...); err != nil {
				return err
			}
		}
		h.Pods = append(h.Pods, pod)
	}
	return nil
}
