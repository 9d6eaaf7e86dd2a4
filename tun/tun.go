// Package tun is the TUN end of the userspace forwarder: it opens a Linux
// TUN device (IFF_TUN|IFF_NO_PI, flannel's flannel0) and moves batches of
// raw IP packets between the kernel and caller-owned buffers. Every
// system call on a queue's descriptor is made here.
//
// The queues are kept out of Go's netpoller: the caller waits for them
// itself (package poller) on the descriptors Queue.Hold lends it, then
// Read drains, without waiting, every packet the kernel has ready; Write
// hands packets to the kernel one write(2) each. Neither allocates per
// packet.
package tun

import (
	"strings"

	"github.com/flannelu/flannelu/internal/metrics"
)

// DefaultName is the device name flanneld's udp backend uses.
const DefaultName = "flannel0"

// DefaultBatchSize is the number of buffers a caller should hand to Read
// and Write at once (Queue.BatchSize).
const DefaultBatchSize = 64

// Config says which device to open and how.
type Config struct {
	// Name is the interface name, DefaultName when empty. A name with a
	// "%d" lets the kernel pick the number.
	Name string
	// Queues is the number of queue file descriptors. 0 or 1 opens a
	// single-queue device; >1 opens the device with IFF_MULTI_QUEUE and
	// attaches that many queues (at most 256, the kernel's MAX_TAP_QUEUES).
	Queues int
	// VnetHdr opens the device with IFF_VNET_HDR and enables checksum and
	// segmentation offloads (TUNSETOFFLOAD). Every frame Read returns and
	// every frame Write takes then BEGINS with a virtio_net_hdr
	// (packet.VirtioNetHdrLen bytes, no num_buffers), and a Read may return
	// a TCP or UDP super-packet of up to 64 KiB that the caller must split
	// by gso_size; parsing that header is the caller's job.
	// Device.Offloads reports what the kernel accepted.
	VnetHdr bool
	// Metrics receives flannelu_tun_truncated_packets_total (packets Read dropped as larger than their buffer);
	// nil exports it nowhere.
	Metrics *metrics.Registry
}

// Offload is a set of TUN offload features (the kernel's TUN_F_* bits).
type Offload uint32

// The offloads Open asks for in VnetHdr mode, with the kernel's values.
const (
	OffloadCsum Offload = 0x01 // TUN_F_CSUM: frames may carry a partial checksum
	OffloadTSO4 Offload = 0x02 // TUN_F_TSO4: TCP/IPv4 super-packets
	OffloadTSO6 Offload = 0x04 // TUN_F_TSO6: TCP/IPv6 super-packets
	OffloadUSO4 Offload = 0x20 // TUN_F_USO4: UDP/IPv4 super-packets (Linux 6.2+)
	OffloadUSO6 Offload = 0x40 // TUN_F_USO6: UDP/IPv6 super-packets (Linux 6.2+)
)

// Has reports whether every feature in f is in o.
func (o Offload) Has(f Offload) bool { return o&f == f }

func (o Offload) String() string {
	if o == 0 {
		return "none"
	}
	names := []struct {
		f    Offload
		name string
	}{{OffloadCsum, "csum"}, {OffloadTSO4, "tso4"}, {OffloadTSO6, "tso6"}, {OffloadUSO4, "uso4"}, {OffloadUSO6, "uso6"}}
	var parts []string
	for _, n := range names {
		if o.Has(n.f) {
			parts = append(parts, n.name)
			o &^= n.f
		}
	}
	if o != 0 {
		parts = append(parts, "unknown")
	}
	return strings.Join(parts, "|")
}
