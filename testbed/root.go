// Package testbed builds the network-namespace hosts that flannelu's
// end-to-end tests, demo and benchmarks run on, and removes them again.
package testbed

import (
	"os"
	"testing"
)

// RequireRoot stops a test that needs root (network namespaces, TUN,
// netlink). Outside CI a non-root run skips it; under CI (CI set) it fails,
// so a root-only test can never pass without having run.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		tb.Fatal("this test needs root (network namespaces); CI must run as root")
	}
	tb.Skip("needs root: network namespaces and TUN devices (run as root, or set CI to force)")
}
