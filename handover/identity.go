package handover

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/flannelu/flannelu/subnet"
)

// Identity is what a flannelu serves: a hand-over happens only between two
// whose identities are equal. Each field is a plain string, compared as it
// is and logged when it differs.
type Identity struct {
	// Store is the lease store: EtcdStore or KubeStore.
	Store string `json:"store"`
	// Network is the network config (NetworkOf): the lease the successor
	// keeps must be one it would have taken itself.
	Network string `json:"network"`
	Backend string `json:"backend"`
	// Iface is the underlay interface, PublicIP and PublicIPv6 the
	// addresses published in the lease ("" for a family the network does
	// not carry).
	Iface      string `json:"iface"`
	PublicIP   string `json:"publicIP,omitempty"`
	PublicIPv6 string `json:"publicIPv6,omitempty"`
	// Device is what the descriptors handed over must suit (the udp
	// backend's queue count and offload mode), "" for kernel backends.
	Device string `json:"device,omitempty"`
}

// EtcdStore names an etcd store: the endpoints (in any order) and the prefix.
func EtcdStore(endpoints, prefix string) string {
	var eps []string
	for _, e := range strings.Split(endpoints, ",") {
		if e = strings.TrimSuffix(strings.TrimSpace(e), "/"); e != "" {
			eps = append(eps, e)
		}
	}
	slices.Sort(eps)
	return "etcd " + strings.Join(slices.Compact(eps), ",") + " " + strings.TrimSuffix(prefix, "/")
}

// KubeStore names the Kubernetes store of one node.
func KubeStore(node string) string { return "kubernetes node " + node }

// UDPDevice names the udp backend's device mode: its descriptors suit
// only a successor of the same --udp-workers and --udp-offload.
func UDPDevice(workers int, offload bool) string {
	return fmt.Sprintf("udp workers %d offload %t", workers, offload)
}

// NetworkOf names a network config: the networks with their subnet
// lengths and the Backend object, compacted.
func NetworkOf(cfg *subnet.Config) string {
	var parts []string
	if cfg.EnableIPv4 {
		parts = append(parts, fmt.Sprintf("%v/%d", cfg.Network, cfg.SubnetLen))
	}
	if cfg.EnableIPv6 {
		parts = append(parts, fmt.Sprintf("%v/%d", cfg.IPv6Network, cfg.IPv6SubnetLen))
	}
	var b bytes.Buffer
	if json.Compact(&b, cfg.Backend) != nil || b.Len() == 0 {
		b.Reset()
		b.WriteString(`{"Type":"` + cfg.BackendType + `"}`)
	}
	return strings.Join(append(parts, b.String()), " ")
}

// differs says how theirs differs from ours ("" when they are equal), for
// a log line written on our side.
func differs(ours, theirs Identity) string {
	for _, f := range []struct{ name, ours, theirs string }{
		{"store", ours.Store, theirs.Store},
		{"backend", ours.Backend, theirs.Backend},
		{"network", ours.Network, theirs.Network},
		{"interface", ours.Iface, theirs.Iface},
		{"public IP", ours.PublicIP, theirs.PublicIP},
		{"public IPv6", ours.PublicIPv6, theirs.PublicIPv6},
		{"device", ours.Device, theirs.Device},
	} {
		if f.ours != f.theirs {
			return fmt.Sprintf("%s %q here, %q there", f.name, f.ours, f.theirs)
		}
	}
	return ""
}
