//go:build linux

package main

import (
	"fmt"
	"slices"

	"github.com/flannelu/flannelu/testbed"
)

// kubePath is flannelu's udp path in Kubernetes mode: the same testbed,
// network config and data path as "udp", with the leases in a real
// kube-apiserver (on host 1, over the same etcd; the Node objects
// registered with podCIDRs as kube-controller-manager assigns them) and
// flannelu running with --kube-subnet-mgr as flannel's service account.
// Next to "udp" it shows that the store does not touch the data path.
const kubePath = "udp-kube"

// pathBackend is the Backend.Type of a flannelu path's network config and
// whether it runs in Kubernetes mode.
func pathBackend(path string) (backend string, kube bool) {
	if path == kubePath {
		return "udp", true
	}
	return path, false
}

// checkKube fails when a Kubernetes-mode path is asked for and the
// kube-apiserver it runs is missing.
func (c *config) checkKube() error {
	if !slices.Contains(c.paths, kubePath) {
		return nil
	}
	if _, err := testbed.KubeAPIServerBinary(); err != nil {
		return fmt.Errorf("path %s: %w", kubePath, err)
	}
	return nil
}
