package udp

import (
	"os"
	"slices"
)

// Inherited is what a running flannelu's udp backend hands to its
// successor on the same host (HandOff there, Options.Inherit here): a
// duplicate of each TUN queue and each UDP socket, worker by worker. The
// kernel keeps the queues attached and the sockets bound, and whatever
// waits in them queued, while either process holds them, so the successor
// takes over without a lost packet.
type Inherited struct {
	Queues   []*os.File
	Sockets  []*os.File // IPv4, one per worker (none on an IPv6-only network)
	Sockets6 []*os.File // IPv6, one per worker when the network carries IPv6
}

// Close closes every descriptor (when they are not used after all).
func (h *Inherited) Close() {
	if h == nil {
		return
	}
	for _, f := range h.Files() {
		f.Close()
	}
}

// Files lists the descriptors as they are sent: queues, IPv4 sockets,
// IPv6 sockets.
func (h *Inherited) Files() []*os.File {
	return slices.Concat(h.Queues, h.Sockets, h.Sockets6)
}
