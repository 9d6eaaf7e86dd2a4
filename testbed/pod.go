package testbed

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"
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
	return h.AddPodsFamilies(n, mtu, gateway)
}

// AddPodsFamilies is AddPods for pods of one or both families: gateways
// holds the bridge address of each (FLANNEL_SUBNET and/or
// FLANNEL_IPV6_SUBNET, at most one per family), and each pod gets the next
// free address of every gateway's subnet and a default route per family.
// With IPv6 it returns once the new pods' addresses and the bridge's have
// left duplicate address detection, as CNI plugins do.
func (h *Host) AddPodsFamilies(n, mtu int, gateways ...netip.Prefix) error {
	if len(gateways) == 0 || len(gateways) > 2 || (len(gateways) == 2 && gateways[0].Addr().Is4() == gateways[1].Addr().Is4()) {
		return fmt.Errorf("testbed: pod gateways %v: want one per family", gateways)
	}
	if h.CNI != nil {
		return fmt.Errorf("testbed: %s wires its pods through CNI, not by hand", h.Name)
	}
	m := strconv.Itoa(mtu)
	if len(h.Pods) == 0 {
		if err := h.addBridge(m, gateways); err != nil {
			return err
		}
	}
	first := len(h.Pods)
	for i := 0; i < n; i++ {
		ns, idx, err := h.newPodNS(addNS)
		if err != nil {
			return err
		}
		pod := &Pod{NS: ns, Veth: fmt.Sprintf("veth%d", idx)}
		steps := [][]string{
			{"ip", "link", "add", pod.Veth, "mtu", m, "type", "veth", "peer", "name", "eth0", "netns", pod.Name},
			{"ip", "link", "set", pod.Veth, "master", "cni0", "up"},
		}
		for _, args := range steps {
			if _, err := h.Run(args...); err != nil {
				return err
			}
		}
		podSteps := [][]string{{"sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1", "net.ipv4.conf.default.rp_filter=1"}}
		for _, gw := range gateways {
			addr := gw.Addr()
			for j := 0; j < idx; j++ {
				addr = addr.Next()
			}
			if addr.Is4() || !pod.Addr.IsValid() {
				pod.Addr = addr
			}
			if addr.Is6() {
				pod.Addr6 = addr
			}
			podSteps = append(podSteps, addrArgs(netip.PrefixFrom(addr, gw.Bits()), "eth0"))
		}
		podSteps = append(podSteps, []string{"ip", "link", "set", "eth0", "up"})
		for _, gw := range gateways {
			podSteps = append(podSteps, []string{"ip", "route", "add", "default", "via", gw.Addr().String()})
		}
		for _, args := range podSteps {
			if _, err := pod.Run(args...); err != nil {
				return err
			}
		}
		h.Pods = append(h.Pods, pod)
	}
	if gateways[len(gateways)-1].Addr().Is6() {
		return h.settlePods(h.Pods[first:])
	}
	return nil
}

// addBridge creates cni0 with the gateway addresses, unless it exists.
func (h *Host) addBridge(mtu string, gateways []netip.Prefix) error {
	if _, err := h.Run("ip", "link", "show", "cni0"); err == nil {
		return nil
	}
	steps := [][]string{{"ip", "link", "add", "cni0", "mtu", mtu, "type", "bridge"}}
	for _, gw := range gateways {
		steps = append(steps, addrArgs(gw, "cni0"))
	}
	steps = append(steps, []string{"ip", "link", "set", "cni0", "up"})
	for _, args := range steps {
		if _, err := h.Run(args...); err != nil {
			return err
		}
	}
	return nil
}

// addrArgs adds an address to dev. IPv6 addresses skip duplicate address
// detection (documentation space, nothing to collide with).
func addrArgs(p netip.Prefix, dev string) []string {
	if p.Addr().Is4() {
		return []string{"ip", "addr", "add", p.String(), "dev", dev}
	}
	return []string{"ip", "-6", "addr", "add", p.String(), "dev", dev, "nodad"}
}

// settlePods waits until the bridge and the pods have usable IPv6.
func (h *Host) settlePods(pods []*Pod) error {
	errs := []error{h.SettleV6(10 * time.Second)}
	for _, p := range pods {
		errs = append(errs, p.SettleV6(10*time.Second))
	}
	return errors.Join(errs...)
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
