package kernel

import (
	"fmt"
	"os"
)

// SetIPv6 turns IPv6 on or off for one device (its disable_ipv6 sysctl in
// the caller's network namespace). A device that carries no IPv6 is
// better without it: the kernel would send router solicitations into it.
// Turning it off is best effort (a kernel without IPv6 has no such file,
// and a device with IPv6 still forwards); only a failure to turn it on is
// an error.
func SetIPv6(device string, on bool) error {
	v := "1"
	if on {
		v = "0"
	}
	if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+device+"/disable_ipv6", []byte(v), 0o644); err != nil && on {
		return fmt.Errorf("enable IPv6 on %s: %w", device, err)
	}
	return nil
}
