package packet

import "encoding/binary"

// IPv6HeaderLen is the length of the fixed IPv6 header.
const IPv6HeaderLen = 40

// DeclaredLen returns the length an IPv4 or IPv6 packet's own header
// claims (IPv4 total length; IPv6 fixed header plus payload length, so no
// jumbograms), and false when b is too short to hold that field or is not
// IP. Unlike ParseIPv4 it checks nothing else, so it can judge a packet that
// a read cut short.
func DeclaredLen(b []byte) (int, bool) {
	if len(b) < 1 {
		return 0, false
	}
	switch b[0] >> 4 {
	case 4:
		if len(b) < 4 {
			return 0, false
		}
		return int(binary.BigEndian.Uint16(b[2:4])), true
	case 6:
		if len(b) < 6 {
			return 0, false
		}
		return IPv6HeaderLen + int(binary.BigEndian.Uint16(b[4:6])), true
	}
	return 0, false
}
