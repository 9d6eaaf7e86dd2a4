// Package subnet is the contract between flannelu's stores and the rest of
// the daemon: the Store interface that etcd (package etcd) and the
// Kubernetes API (package kube) implement, and the values every store and
// backend reads — the network config (Config), a host's lease (Lease and
// its LeaseAttrs), the changes to the peers' leases (Event), the
// Validator that judges peer leases the same way for every store, and the
// subnet.env file the CNI plugin reads (Env). Every format here is
// flanneld's, so that a flanneld and a flannelu sharing a store see each
// other's leases as their own.
package subnet
