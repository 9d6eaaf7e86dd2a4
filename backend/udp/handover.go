package udp

import "os"

// Inherited is what a running flannelu's udp backend hands to its
// successor on the same host (HandOff there, Options.Inherit here): a
// duplicate of each TUN queue and each UDP socket, worker by worker. The
// kernel keeps the queues attached and the sockets bound, and whatever
// waits in them queued, while either process holds them, so the successor
// takes over without a lost packet.
type Inherited struct {
	Queues  []*os.File
	Sockets []*os.File
}

// Close closes every descriptor (when they are not used after all).
func (h *Inherited) Close() {
	if h == nil {
		return
	}
	for _, f := range append(h.Queues, h.Sockets...) {
		f.Close()
	}
}

// Files lists the descriptors, queues first, as they are sent.
func (h *Inherited) Files() []*os.File {
	return append(append([]*os.File(nil), h.Queues...), h.Sockets...)
}
