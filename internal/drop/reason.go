// Package drop names why the forwarder dropped a packet, as a closed set of
// reasons that become a metric label, and counts drops and forwarded
// traffic per direction without locks or allocations; Counters.Register
// exports the counts through a metrics.Registry.
package drop

// Reason is why one packet was dropped. The set is closed: every value
// below is a metric label, and new reasons are added here, not invented at
// call sites.
type Reason uint8

const (
	// NoRoute: inside, the inner destination is in no peer's subnet
	// (answered with ICMP net unreachable where allowed).
	NoRoute Reason = iota
	// UnknownPeer: outside, the datagram's source address is no known
	// peer's public IP. Only the address is compared, not the port: a
	// peer behind NAT may send from another source port than its lease's.
	UnknownPeer
	// Malformed: the payload is not a valid IPv4 packet (bad version,
	// length or header checksum).
	Malformed
	// NotIPv4: inside, the TUN delivered a packet of a family the network
	// does not carry (IPv6 without EnableIPv6); the label keeps its name
	// from when the udp backend carried IPv4 only.
	NotIPv4
	// NotOurSubnet: outside, the inner destination is not in this host's
	// lease subnet.
	NotOurSubnet
	// SpoofedSource: outside, the inner source is not in the sending
	// peer's subnet (nor, with the udp backend's ForeignSources, outside
	// the Network).
	SpoofedSource
	// TTLExpired: the inner TTL was 0 or 1 and cannot be decremented
	// (answered with ICMP time exceeded where allowed).
	TTLExpired
	// TooBig: the packet exceeds the path MTU with DF set or does not fit
	// the buffer (answered with ICMP fragmentation needed where allowed).
	TooBig
	// WriteError: sending to the UDP socket or writing to the TUN failed.
	WriteError

	numReasons // keep last
)

// NumReasons is the number of defined reasons; Reason values are
// 0..NumReasons-1.
const NumReasons = int(numReasons)

var reasonLabels = [numReasons]string{
	NoRoute:       "no_route",
	UnknownPeer:   "unknown_peer",
	Malformed:     "malformed",
	NotIPv4:       "not_ipv4",
	NotOurSubnet:  "not_our_subnet",
	SpoofedSource: "spoofed_source",
	TTLExpired:    "ttl_expired",
	TooBig:        "too_big",
	WriteError:    "write_error",
}

// String is the reason's metric label in snake_case, "unknown" for a value
// outside the set.
func (r Reason) String() string {
	if r >= numReasons {
		return "unknown"
	}
	return reasonLabels[r]
}

// counted reports whether some check of the forwarder counts r. Only
// counted reasons are exported, so /metrics shows no label that nothing
// can increment.
func (r Reason) counted() bool { return r < numReasons }

// Direction is which way a packet was travelling.
type Direction uint8

const (
	// Inside: from the TUN device (a local pod) to a peer over UDP.
	Inside Direction = iota
	// Outside: from a peer over UDP into the TUN device.
	Outside

	numDirections
)

// NumDirections is the number of directions; values are 0..NumDirections-1.
const NumDirections = int(numDirections)

// String is the direction's metric label, "unknown" outside the set.
func (d Direction) String() string {
	switch d {
	case Inside:
		return "inside"
	case Outside:
		return "outside"
	}
	return "unknown"
}
