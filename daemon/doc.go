// Package daemon is flannelu's daemon: ParseOptions reads flanneld's flags
// and environment (plus flannelu's own), and Run starts the daemon in
// stages and runs it until its context ends.
//
// The stages, in order: the health server (/healthz, /readyz, /metrics),
// the store (etcd or the Kubernetes API), the network config, the underlay
// interface, the hand-over from a flannelu or flanneld running on this
// host (package handover), the leftovers of another backend, the backend,
// the subnet lease, then the loops: the lease keeper, the lease watcher
// whose events pass the validator (and feed the peer filter) before the
// backend sees them, the masquerade and forward rules, subnet.env, the
// blackhole routes, the backend and the hand-over to a successor. Nothing
// of the host's network is touched before the hand-over stage.
package daemon
