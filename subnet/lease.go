package subnet

import (
	"encoding/json"
	"net/netip"
	"time"
)

// LeaseAttrs is the JSON value stored at a lease key, in flannel's field
// names and order: {"PublicIP":"192.0.2.1","PublicIPv6":null} for udp;
// vxlan and host-gw add BackendType (and vxlan BackendData).
type LeaseAttrs struct {
	PublicIP    netip.Addr      // the host's underlay (public) IPv4 address
	PublicIPv6  netip.Addr      // zero Addr is written as null
	BackendType string          // "" for flannel's udp backend
	BackendData json.RawMessage // backend specific, e.g. {"VNI":1,"VtepMAC":"..."}; nil when absent
	// BackendV6Data is kept so a dual-stack vxlan peer's value round-trips.
	BackendV6Data json.RawMessage
}

// Lease is one host's subnet as a store holds it.
type Lease struct {
	Subnet     netip.Prefix // IPv4 subnet, masked, e.g. 198.18.40.0/24
	IPv6Subnet netip.Prefix // zero Prefix unless the network is dual stack
	Attrs      LeaseAttrs
	// Expiration is when the etcd lease runs out; zero for a reservation
	// (a key with no etcd lease), which flannelu never takes or deletes.
	Expiration time.Time
	// LeaseID is the etcd lease the key is attached to, 0 for a reservation.
	LeaseID int64
	// Created orders leases by when their key was created: etcd's
	// CreateRevision (the same on every host); 0 when the store has no
	// such order. The Validator gives a contested subnet to the lease
	// created first.
	Created int64
}

// EventType says what happened to a peer's lease.
type EventType int

const (
	// EventAdded: a lease we had not seen appeared.
	EventAdded EventType = iota + 1
	// EventChanged: a lease we knew was rewritten with different attributes
	// (for example a new PublicIP or VtepMAC).
	EventChanged
	// EventRemoved: a lease we knew was deleted or expired.
	EventRemoved
)

func (t EventType) String() string {
	switch t {
	case EventAdded:
		return "added"
	case EventChanged:
		return "changed"
	case EventRemoved:
		return "removed"
	}
	return "unknown"
}

// Event is one change to the set of leases. For EventRemoved, Lease holds
// the last value seen before the removal.
type Event struct {
	Type  EventType
	Lease Lease
	// Key names the lease in its store (the etcd key). Empty means the
	// subnets are the name (MakeSubnetKey), as they are in etcd.
	Key string
}

// key is the name the Validator keeps the lease under.
func (ev Event) key() string {
	if ev.Key != "" {
		return ev.Key
	}
	return MakeSubnetKey(ev.Lease.Subnet, ev.Lease.IPv6Subnet)
}
