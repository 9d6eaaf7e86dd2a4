// Package offload is the packet arithmetic behind segmentation offloads: the
// virtio_net_hdr that a TUN opened with IFF_VNET_HDR puts in front of every
// packet, splitting a TSO/USO super-packet read from the TUN into wire-sized
// packets (Split: each one's rewritten headers and a slice of the
// super-packet's payload, which is never copied), merging received packets back into super-packets for a TUN
// write (Coalescer, GRO in software). The Internet checksum both need is
// package packet's.
//
// Everything here is a pure function of byte slices: no file descriptors, no
// syscalls, no logging. The hot paths (Split, Coalescer.Coalesce) do not
// allocate; tests prove it with testing.AllocsPerRun.
package offload
