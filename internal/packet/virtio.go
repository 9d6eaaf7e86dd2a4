package packet

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// VirtioNetHdrLen is the size of struct virtio_net_hdr, the header a TUN
// opened with IFF_VNET_HDR puts before every packet it reads and expects
// before every packet written to it.
const VirtioNetHdrLen = 10

// Flags (VirtioNetHdr.Flags), from linux include/uapi/linux/virtio_net.h.
const (
	// FlagNeedsCsum: the L4 checksum field at CsumStart+CsumOffset holds the
	// folded pseudo-header sum only; the sum over CsumStart..end is still
	// to be added.
	FlagNeedsCsum uint8 = 1
	// FlagDataValid: the checksum was verified (receive side only).
	FlagDataValid uint8 = 2
)

// GSO types (VirtioNetHdr.GSOType).
const (
	GSONone   uint8 = 0
	GSOTCPv4  uint8 = 1
	GSOUDP    uint8 = 3 // UFO, IP fragmentation; not supported by offload.Split
	GSOTCPv6  uint8 = 4
	GSOUDPL4  uint8 = 5 // USO: UDP segmentation, IPv4 or IPv6
	GSOECNBit uint8 = 0x80
)

// ErrShortVirtioNetHdr is returned when a buffer cannot hold a
// virtio_net_hdr.
var ErrShortVirtioNetHdr = errors.New("virtio_net_hdr: buffer shorter than 10 bytes")

// VirtioNetHdr is struct virtio_net_hdr. On a TUN without TUNSETVNETLE/BE
// (the legacy interface) its 16-bit fields are in host byte order, which is
// what Decode and Encode use.
type VirtioNetHdr struct {
	Flags, GSOType uint8
	// HdrLen is the length of the L3+L4 headers. On read the kernel may
	// report more (its linear head length), so offload.Split recomputes it.
	HdrLen uint16
	// GSOSize is the L4 payload size of every segment but the last.
	GSOSize uint16
	// CsumStart is the offset of the L4 header, CsumOffset the offset of the
	// checksum field inside it (16 for TCP, 6 for UDP).
	CsumStart, CsumOffset uint16
}

// Decode reads a header from the first VirtioNetHdrLen bytes of b.
func (h *VirtioNetHdr) Decode(b []byte) error {
	if len(b) < VirtioNetHdrLen {
		return ErrShortVirtioNetHdr
	}
	h.Flags = b[0]
	h.GSOType = b[1]
	h.HdrLen = binary.NativeEndian.Uint16(b[2:4])
	h.GSOSize = binary.NativeEndian.Uint16(b[4:6])
	h.CsumStart = binary.NativeEndian.Uint16(b[6:8])
	h.CsumOffset = binary.NativeEndian.Uint16(b[8:10])
	return nil
}

// Encode writes the header into the first VirtioNetHdrLen bytes of b.
func (h VirtioNetHdr) Encode(b []byte) error {
	if len(b) < VirtioNetHdrLen {
		return ErrShortVirtioNetHdr
	}
	b[0] = h.Flags
	b[1] = h.GSOType
	binary.NativeEndian.PutUint16(b[2:4], h.HdrLen)
	binary.NativeEndian.PutUint16(b[4:6], h.GSOSize)
	binary.NativeEndian.PutUint16(b[6:8], h.CsumStart)
	binary.NativeEndian.PutUint16(b[8:10], h.CsumOffset)
	return nil
}

// String is for logs and test failures.
func (h VirtioNetHdr) String() string {
	return fmt.Sprintf("vnet{flags=%#x gso=%#x hdr_len=%d gso_size=%d csum=%d+%d}",
		h.Flags, h.GSOType, h.HdrLen, h.GSOSize, h.CsumStart, h.CsumOffset)
}
