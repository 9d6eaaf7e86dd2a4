package tun

import "github.com/flannelu/flannelu/internal/packet"

// truncated reports whether a read that filled its whole buffer cut the
// packet short: the kernel's TUN read silently truncates instead of
// failing, so a full buffer is only trusted when the IP header agrees.
func truncated(pkt []byte) bool {
	n, ok := packet.DeclaredLen(pkt)
	return ok && n > len(pkt)
}
