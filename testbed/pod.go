package testbed

import (
	"fmt"
	"net/netip"
	"strconv"
)

// AddPods does what flannel's CNI plugin and the bridge plugin it
// delegates to do for n new containers, by hand: a cni0 bridge that holds
// the subnet's first address (FLANNEL_SUBNET), and per pod a namespace
// with eth0 on the bridge, the next free address of the subnet, the
// overlay MTU (FLANNEL_MTU) and a default route via the bridge. It is the
// path for tests and benchmarks that need no CNI plugins; CNIChain.AddPods
// runs the real chain. A host uses one of the two, never both.
func (h *Host) AddPods(n int, gateway netip.Prefix, mtu int) error {
	if !gateway.Addr().Is4() {
		return fmt.Errorf("testbed: pod gateway %v is not IPv4", gateway)
	}
	if h.CNI != nil {
		return fmt.Errorf("testbed: %s wires its pods through CNI, not by hand", h.Name)
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
		ns, idx, err := h.newPodNS(addNS)
		if err != nil {
			return err
		}
		addr := gateway.Addr()
		for j := 0; j < idx; j++ {
			addr = addr.Next()
		}
		pod := &Pod{NS: ns, Addr: addr, Veth: fmt.Sprintf("veth%d", idx)}
		steps := [][]string{
			{"ip", "link", "add", pod.Veth, "mtu", m, "type", "veth", "peer", "name", "eth0", "netns", pod.Name},
			{"ip", "link", "set", pod.Veth, "master", "cni0", "up"},
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

// newPodNS creates the namespace of the host's next pod with create (addNS
// or createNS), fu-<pid>-<bed>-h<i>p<n> with n counting every pod the host ever
// had, bound to the host's CPUs; the bed removes it on Close.
func (h *Host) newPodNS(create func(string) (NS, error)) (NS, int, error) {
	h.podSeq++
	ns, err := create(h.bed.track(fmt.Sprintf("h%dp%d", h.Index, h.podSeq)))
	ns.CPUs = h.CPUs // a pod runs on its host's CPUs
	return ns, h.podSeq, err
}

// removePod forgets a pod the host no longer has and removes its namespace.
func (h *Host) removePod(p *Pod) {
	for i, q := range h.Pods {
		if q == p {
			h.Pods = append(h.Pods[:i], h.Pods[i+1:]...)
			break
		}
	}
	deleteNS(p.Name)
}
