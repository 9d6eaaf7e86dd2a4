package tun

import "testing"

func TestTruncated(t *testing.T) {
	for _, c := range []struct {
		pkt  []byte
		want bool
	}{
		{[]byte{0x45, 0, 0x05, 0xc0}, true},        // IPv4 claims 1472 bytes
		{[]byte{0x45, 0, 0, 4}, false},             // IPv4 claims exactly what was read
		{[]byte{0x60, 0, 0, 0, 0x00, 0x10}, true},  // IPv6 claims 56 bytes
		{[]byte{0x10, 0, 0xff, 0xff, 0, 0}, false}, // not IP: nothing to judge by
		{[]byte{0x45, 0}, false},                   // too short for the length field
	} {
		if got := truncated(c.pkt); got != c.want {
			t.Errorf("truncated(% x) = %v, want %v", c.pkt, got, c.want)
		}
	}
}
