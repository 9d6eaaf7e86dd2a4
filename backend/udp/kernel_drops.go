package udp

import (
	"sync"

	"github.com/flannelu/flannelu/encap"
	"github.com/flannelu/flannelu/internal/metrics"
)

// kernelDrops exports the kernel's counts of packets lost next to the
// forwarder, where flannelu's own counters cannot see them: at the TUN
// device (its queue towards flannelu full) and at the sockets (the
// receive buffer full). They are read
// at each scrape from the device and sockets Start opened.
type kernelDrops struct {
	mu    sync.Mutex
	dev   string // the TUN's name; "" before Start
	conns []*encap.Conn
}

func (k *kernelDrops) register(reg *metrics.Registry) {
	reg.CounterFunc("flannelu_tun_tx_dropped_packets_total",
		"Packets for peers the kernel dropped at the udp backend's TUN device because the forwarder's queue was full (the device's tx_dropped).",
		k.tunDrops)
	reg.CounterFunc("flannelu_udp_socket_dropped_datagrams_total",
		"Datagrams from peers the kernel dropped at the udp backend's sockets before the forwarder read them: the receive buffer was full (the forwarder fell behind) or the UDP checksum was bad.",
		k.socketDrops)
}

// set names what Start opened.
func (k *kernelDrops) set(dev string, conns []*encap.Conn) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.dev, k.conns = dev, conns
}

func (k *kernelDrops) socketDrops() uint64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	var n uint64
	for _, c := range k.conns {
		n += c.Drops()
	}
	return n
}

func (k *kernelDrops) tunDrops() uint64 {
	k.mu.Lock()
	dev := k.dev
	k.mu.Unlock()
	if dev == "" {
		return 0
	}
	return deviceTxDropped(dev)
}
