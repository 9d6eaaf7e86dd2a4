// Package etcd is flannelu's etcd store, in flanneld's schema: the network
// config at <prefix>/config and one key per host under <prefix>/subnets/,
// bound to an etcd lease with a TTL. Manager implements subnet.Store: it
// acquires this host's subnet (reusing its own lease or a reservation,
// else the previous subnet.env's, else a random free one), keeps the lease
// renewed and restores it when someone else changes it, and watches the
// peers' keys without losing or repeating an event across reconnects and
// compactions. Every request is bounded by a timeout and reported to an
// outage tracker, so an etcd that stops answering is seen and logged.
package etcd
