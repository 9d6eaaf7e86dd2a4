//go:build linux

package main

// flanneldPath is flanneld v0.20.2's own udp backend (its C proxy: one
// thread in poll() on the TUN and the socket) on the same testbed, etcd
// and network config as flannelu's udp path: the peer flannelu replaces,
// measured side by side.
const flanneldPath = "flanneld-udp"

// flanneldBin is where scripts/flanneld.sh (make flanneld) puts it.
const flanneldBin = "bin/flanneld-v0.20.2"

// setupFlanneld runs flanneld v0.20.2 with the udp backend on eth0. It
// panics on SIGTERM (its etcd watch indexes out of range) and so exits
// non-zero when the testbed stops it: the testbed ignores exit statuses.
func setupFlanneld(cfg *config, s *setup, name, dir string) error {
	return setupCluster(cfg, s, daemon{bin: cfg.flanneld, backend: "udp", args: func(int) ([]string, error) {
		return []string{"--iface", "eth0"}, nil
	}}, name, dir)
}
