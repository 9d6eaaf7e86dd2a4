package kernel

import "github.com/flannelu/flannelu/internal/metrics"

// PeerErrors is the count the kernel backends (and wireguard) keep of peer leases they
// could not program or ignored, flannelu_peer_errors_total in reg.
func PeerErrors(reg *metrics.Registry) *metrics.Counter {
	return reg.Counter("flannelu_peer_errors_total",
		"Peer leases the vxlan, host-gw or wireguard backend could not program (for example a gateway not on this link) or ignored "+
			"(another backend type, bad BackendData, a subnet outside the network); host-gw counts a peer that keeps failing once.")
}
