//go:build linux

package main

import (
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/flannelu/flannelu/testbed"
)

// flanneldPath is flanneld v0.20.2's own udp backend (its C proxy: one
// thread in poll() on the TUN and the socket) on the same testbed, etcd
// and network config as flannelu's udp path: the peer flannelu replaces,
// measured side by side.
const flanneldPath = "flanneld-udp"

// flanneldBin is where scripts/flanneld.sh (make flanneld) puts it.
const flanneldBin = "bin/flanneld-v0.20.2"

// flanneldArgs are the flags each host's flanneld gets beyond the testbed's.
var flanneldArgs = []string{"--iface", "eth0"}

// setupFlanneld runs flanneld v0.20.2 with the udp backend on eth0. It
// panics on SIGTERM (its etcd watch indexes out of range) and so exits
// non-zero when the testbed stops it: the testbed ignores exit statuses.
func setupFlanneld(cfg *config, s *setup, name, dir string) error {
	err := setupCluster(cfg, s, daemon{bin: cfg.flanneld, backend: "udp", args: func(int) ([]string, error) {
		return flanneldArgs, nil
	}}, name, dir)
	if err != nil {
		return err
	}
	return ensureFlanneldPeers(s.tb.(*testbed.Cluster))
}

// peerWait is how long a flanneld has to log the other host's lease. It
// logs it within milliseconds of the lease's write when its watch sees it;
// the wait is long only for a loaded machine.
var peerWait = 10 * time.Second

// ensureFlanneldPeers makes sure each flanneld has learnt the other host's
// lease, and restarts one that has not. flanneld v0.20.2 can miss for good
// a lease written just after its watch began (seen in a bench run: host 1
// never logged host 2's subnet, written 80 ms into its watch, so the pods
// never met); a restarted flanneld keeps its lease (same public IP) and
// lists the leases that exist before it watches.
func ensureFlanneldPeers(c *testbed.Cluster) error {
	for i, peer := range [2]int{2, 1} {
		host := i + 1
		n, sn := c.Nodes[host], c.Nodes[peer].Env.Subnet
		added := regexp.MustCompile(`Subnet added: ` + regexp.QuoteMeta(sn.String()))
		if n.Proc.WaitLog(added, peerWait) == nil {
			continue
		}
		slog.Warn("flanneld missed a peer's lease; restarting it", "host", host, "peer_subnet", sn)
		n.Stop() //nolint:errcheck // flanneld v0.20.2 exits non-zero on SIGTERM
		restarted, err := c.StartNode(host, flanneldArgs...)
		if err != nil {
			return err
		}
		if restarted.Env.Subnet != n.Env.Subnet {
			return fmt.Errorf("flanneld on host %d came back with %v, not its lease %v", host, restarted.Env.Subnet, n.Env.Subnet)
		}
		if err := restarted.Proc.WaitLog(added, peerWait); err != nil {
			return fmt.Errorf("restarted flanneld on host %d still has no route to %v: %w", host, sn, err)
		}
	}
	return nil
}
