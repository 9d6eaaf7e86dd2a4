package encap

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Drops is the number of datagrams the kernel dropped on the socket
// (SO_MEMINFO's SK_MEMINFO_DROPS, the same count as the drops column of
// /proc/net/udp): its receive buffer was full when they arrived (the
// forwarder fell behind), or their UDP checksum was bad. 0 once closed.
func (c *Conn) Drops() uint64 {
	var mem [unix.SK_MEMINFO_VARS]uint32
	size := uint32(unsafe.Sizeof(mem))
	var errno unix.Errno
	err := c.raw.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_MEMINFO,
			uintptr(unsafe.Pointer(&mem[0])), uintptr(unsafe.Pointer(&size)), 0)
	})
	if err != nil || errno != 0 {
		return 0
	}
	return uint64(mem[unix.SK_MEMINFO_DROPS])
}
