package daemon

import (
	"io"
	"strings"
	"testing"
)

// A --public-ip other hosts cannot send to is refused with the reason
// (--iface and --public-ipv6: iface_linux_test.go, flags_test.go).
func TestUnreachablePublicIPRefused(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--public-ip", "127.0.0.1"}, "--public-ip 127.0.0.1: 127.0.0.1 is a loopback address"},
		{[]string{"--public-ip", "0.0.0.0"}, "unspecified"},
		{[]string{"--public-ip", "224.0.0.9"}, "multicast"},
		{[]string{"--public-ip", "169.254.10.1"}, "link-local"},
		{[]string{"--public-ip", "255.255.255.255"}, "broadcast"},
	} {
		_, err := ParseOptions(c.args, envOf(nil), io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one containing %q", c.args, err, c.want)
		}
	}
	if _, err := ParseOptions([]string{"--public-ip", "192.0.2.10"}, envOf(nil), io.Discard); err != nil {
		t.Errorf("usable addresses refused: %v", err)
	}
}
