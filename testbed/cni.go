package testbed

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// FlannelConflist is kube-flannel's /etc/cni/net.d/10-flannel.conflist,
// byte for byte: the flannel plugin, which turns subnet.env into a bridge
// delegate with host-local IPAM, then portmap.
const FlannelConflist = `{"name":"cbr0","cniVersion":"0.3.1","plugins":[{"type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}},{"type":"portmap","capabilities":{"portMappings":true}}]}`

// loopbackConf is the network a container runtime adds to every sandbox
// before the pod network: lo up.
const loopbackConf = `{"cniVersion":"0.3.1","name":"lo","type":"loopback"}`

// CNIChain creates and removes one host's pods as kubelet and the
// container runtime do on a real node: `cnitool add|del <network>
// /run/netns/<pod>` run in the host's namespace, with CNI_PATH at the
// plugins and NETCONFPATH at a directory holding the conflist unchanged.
//
// The plugins keep their defaults, as on a node: the flannel plugin reads
// /run/flannel/subnet.env and keeps its scratch files in
// /var/lib/cni/flannel, host-local keeps its store in
// /var/lib/cni/networks/<network>, libcni caches results in
// /var/lib/cni/results. All namespace hosts share one filesystem, so each
// cnitool runs in a mount namespace of its own (ip netns exec makes one)
// with this host's directories bound over /var/lib/cni and /run/flannel,
// and /run/flannel/subnet.env a symlink to the host's subnet.env.
type CNIChain struct {
	Host *Host
	// Network is the conflist's name ("cbr0"), what cnitool is given.
	Network string
	// SubnetFile is the subnet.env flannelu writes for this host.
	SubnetFile string
	// Dir holds the host's CNI state: net.d (the conflist), lo.d (the
	// loopback network), var-lib-cni and run-flannel.
	Dir   string
	tools cniTools
}

// UseCNI makes the host create its pods through the CNI chain the
// conflist describes (FlannelConflist, or a DaemonSet manifest's
// cni-conf.json), reading the host's flannel state from subnetFile. The
// conflist is written unchanged.
func (h *Host) UseCNI(conflist []byte, subnetFile string) (*CNIChain, error) {
	if h.CNI != nil || len(h.Pods) > 0 {
		return nil, fmt.Errorf("testbed: %s already has pods or a CNI chain", h.Name)
	}
	var conf struct{ Name string }
	if err := json.Unmarshal(conflist, &conf); err != nil || conf.Name == "" {
		return nil, fmt.Errorf("testbed: conflist without a network name (%v): %s", err, conflist)
	}
	tools, err := findCNITools()
	if err != nil {
		return nil, err
	}
	subnetFile, err = filepath.Abs(subnetFile)
	if err != nil {
		return nil, err
	}
	c := &CNIChain{Host: h, Network: conf.Name, SubnetFile: subnetFile,
		Dir: filepath.Join(h.bed.Dir, h.Name, "cni"), tools: tools}
	if err := c.writeConfig(conflist); err != nil {
		return nil, err
	}
	h.CNI = c
	return c, nil
}

func (c *CNIChain) writeConfig(conflist []byte) error {
	// Mount points on the shared filesystem, as a CNI node has them; the
	// bind mounts over them live only in each cnitool's mount namespace.
	for _, dir := range []string{"/var/lib/cni", "/run/flannel", c.path("var-lib-cni"), c.path("run-flannel"),
		c.path("net.d"), c.path("lo.d")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(c.path("net.d", "10-flannel.conflist"), conflist, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(c.path("lo.d", "99-loopback.conf"), []byte(loopbackConf), 0o644); err != nil {
		return err
	}
	link := c.path("run-flannel", "subnet.env")
	if link == c.SubnetFile {
		return nil
	}
	os.Remove(link)
	return os.Symlink(c.SubnetFile, link)
}

func (c *CNIChain) path(elem ...string) string {
	return filepath.Join(append([]string{c.Dir}, elem...)...)
}

// nodeMounts binds the host's directories where the plugins look, then
// runs the command: "$1" over /var/lib/cni, "$2" over /run/flannel.
const nodeMounts = `mount --bind "$1" /var/lib/cni && mount --bind "$2" /run/flannel && shift 2 && exec "$@"`

// PortMapping is a pod's hostPort, as kubelet hands it to the portmap
// plugin (the portMappings capability).
type PortMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"` // "tcp" or "udp"
}

// cnitool runs `cnitool <cmd> <network> <pod's netns>` in the host's
// namespace; netDir is the NETCONFPATH that holds network. The pod's port
// mappings go along (CAP_ARGS) on ADD and DEL alike, as kubelet passes
// them, so that DEL finds portmap's rules.
func (c *CNIChain) cnitool(cmd, netDir, network string, pod *Pod) (string, error) {
	env := []string{"CNI_PATH=" + strings.Join(c.tools.path, ":"), "NETCONFPATH=" + netDir}
	if len(pod.ports) > 0 {
		capArgs, err := json.Marshal(map[string][]PortMapping{"portMappings": pod.ports})
		if err != nil {
			return "", err
		}
		env = append(env, "CAP_ARGS="+string(capArgs))
	}
	argv := append([]string{"sh", "-c", nodeMounts, "sh", c.path("var-lib-cni"), c.path("run-flannel"), "env"}, env...)
	return c.Host.Run(append(argv, c.tools.cnitool, cmd, network, pod.Path())...)
}

// AddPods creates n pods through the chain (CNI ADD of the loopback
// network, then of the pod network) and appends them to Host.Pods.
func (c *CNIChain) AddPods(n int) error {
	for i := 0; i < n; i++ {
		if _, err := c.AddPod(); err != nil {
			return err
		}
	}
	return nil
}

// AddPod creates one pod through the chain, with the given hostPorts.
// Its address, gateway, routes and MTU are whatever the plugins made of
// subnet.env. A failed ADD is followed by a DEL, as the CNI spec asks of a
// runtime.
func (c *CNIChain) AddPod(ports ...PortMapping) (*Pod, error) {
	h := c.Host
	if _, err := os.Stat(c.SubnetFile); err != nil {
		return nil, fmt.Errorf("testbed: pod on %s: no subnet.env yet (is flannelu running?): %w", h.Name, err)
	}
	ns, _, err := h.newPodNS(createNS)
	if err != nil {
		return nil, err
	}
	pod := &Pod{NS: ns, ports: ports}
	out, err := c.cnitool("add", c.path("lo.d"), "lo", pod)
	if err == nil {
		out, err = c.cnitool("add", c.path("net.d"), c.Network, pod)
	}
	if err == nil {
		err = pod.readResult(out)
	}
	if err != nil {
		c.del(pod) //nolint:errcheck // the ADD's error is the one to report
		deleteNS(ns.Name)
		return nil, fmt.Errorf("testbed: CNI ADD of a pod on %s: %w", h.Name, err)
	}
	h.Pods = append(h.Pods, pod)
	return pod, nil
}

// readResult takes the pod's addresses and host veth from the ADD result:
// the first IPv4 address (Addr) and the first IPv6 one (Addr6, and Addr
// too for an IPv6-only pod), and the last interface outside the sandbox
// (the bridge plugin lists the bridge, the host veth, then the pod's eth0).
func (p *Pod) readResult(out string) error {
	var res struct {
		Interfaces []struct{ Name, Sandbox string }
		IPs        []struct{ Address string }
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		return fmt.Errorf("CNI result: %w: %s", err, out)
	}
	for _, ip := range res.IPs {
		pfx, err := netip.ParsePrefix(ip.Address)
		switch {
		case err != nil:
		case pfx.Addr().Is4() && !p.Addr.Is4():
			p.Addr = pfx.Addr()
		case pfx.Addr().Is6() && !p.Addr6.IsValid():
			p.Addr6 = pfx.Addr()
		}
	}
	if !p.Addr.IsValid() {
		p.Addr = p.Addr6 // an IPv6-only pod
	}
	for _, iface := range res.Interfaces {
		if iface.Sandbox == "" {
			p.Veth = iface.Name
		}
	}
	if !p.Addr.IsValid() || p.Veth == "" {
		return fmt.Errorf("CNI result without an address or host veth: %s", out)
	}
	return nil
}

// DelPod removes a pod as kubelet does: CNI DEL of the pod network and
// the loopback network, then its namespace. The namespace goes even when
// DEL fails.
func (c *CNIChain) DelPod(p *Pod) error {
	err := c.del(p)
	c.Host.removePod(p)
	return err
}

func (c *CNIChain) del(p *Pod) error {
	_, err := c.cnitool("del", c.path("net.d"), c.Network, p)
	_, errLo := c.cnitool("del", c.path("lo.d"), "lo", p)
	return errors.Join(err, errLo)
}

// delAll removes every pod of the host, for Bed.Close.
func (c *CNIChain) delAll() {
	for _, p := range slices.Clone(c.Host.Pods) {
		c.DelPod(p) //nolint:errcheck // best effort: the bed is going
	}
}

// Reserved lists the addresses host-local holds for the network: one
// file per address in its store, as on a node.
func (c *CNIChain) Reserved() ([]netip.Addr, error) {
	entries, err := os.ReadDir(c.path("var-lib-cni", "networks", c.Network))
	if err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	for _, e := range entries {
		if a, err := netip.ParseAddr(e.Name()); err == nil {
			addrs = append(addrs, a)
		}
	}
	return addrs, nil
}

// cniTools are the binaries the chain runs: cnitool and the plugins'
// directories, CNI_PATH.
type cniTools struct {
	cnitool string
	path    []string
}

// cniPlugins are the plugins FlannelConflist and the loopback network use.
var cniPlugins = []string{"flannel", "bridge", "host-local", "portmap", "loopback"}

// findCNITools finds cnitool and the flannel plugin where scripts/deps.sh
// installs them (<module root>/bin/cni), and Debian's
// containernetworking-plugins (/usr/lib/cni; /opt/cni/bin is the upstream
// layout).
func findCNITools() (cniTools, error) {
	root, err := moduleRoot()
	if err != nil {
		return cniTools{}, err
	}
	own := filepath.Join(root, "bin", "cni")
	t := cniTools{cnitool: filepath.Join(own, "cnitool"), path: []string{own, "/usr/lib/cni", "/opt/cni/bin"}}
	missing := []string{}
	for _, name := range append([]string{"cnitool"}, cniPlugins...) {
		dirs := t.path
		if name == "cnitool" {
			dirs = []string{own}
		}
		if !slices.ContainsFunc(dirs, func(d string) bool { return isExecutable(filepath.Join(d, name)) }) {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return t, fmt.Errorf("testbed: CNI tools missing (%s) in %s: run `make deps` (scripts/deps.sh)",
			strings.Join(missing, ", "), strings.Join(t.path, ":"))
	}
	return t, nil
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// moduleRoot is the directory of flannelu's go.mod, found upwards from
// the working directory (a package's directory under go test, the
// repository under go run and make).
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(b), "module github.com/flannelu/flannelu\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("testbed: not inside the flannelu module (no go.mod above the working directory)")
		}
		dir = parent
	}
}
