package tun

import "encoding/binary"

// declaredLen returns the length an IPv4 or IPv6 packet's own header
// claims (IPv6: without extension jumbograms), and false when pkt is too
// short to hold that field or is not IP.
func declaredLen(pkt []byte) (int, bool) {
	if len(pkt) < 1 {
		return 0, false
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 4 {
			return 0, false
		}
		return int(binary.BigEndian.Uint16(pkt[2:4])), true
	case 6:
		if len(pkt) < 6 {
			return 0, false
		}
		return 40 + int(binary.BigEndian.Uint16(pkt[4:6])), true
	}
	return 0, false
}

// truncated reports whether a read that filled its whole buffer cut the
// packet short: the kernel's TUN read silently truncates instead of
// failing, so a full buffer is only trusted when the IP header agrees.
func truncated(pkt []byte) bool {
	n, ok := declaredLen(pkt)
	return ok && n > len(pkt)
}
