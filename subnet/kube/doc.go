// Package kube is flannelu's Kubernetes store (flanneld's
// --kube-subnet-mgr): the API server is the store, each node's
// spec.podCIDR(s) is its subnet, and the flannel annotations on the Node
// objects are the leases, in flanneld's exact names and values (flannel's
// pkg/subnet/kube). It implements subnet.Store, so the daemon, the backends
// and subnet.env are the same as with etcd.
//
// Peers come from one Node informer (client-go) whose cache every method
// reads; nothing lists the nodes per event.
package kube
