package subnet

// InvalidReason is why the Validator did not use a peer lease. The set is
// closed: every value is a label of flannelu_invalid_leases_total, and new
// reasons are added here, not invented at call sites.
type InvalidReason uint8

const (
	// OutsideNetwork: a subnet does not lie strictly in Network (or
	// IPv6Network), or has host bits set.
	OutsideNetwork InvalidReason = iota
	// WrongLength: a subnet's length is not SubnetLen (or IPv6SubnetLen);
	// never in Kubernetes mode, where they are 0.
	WrongLength
	// NoSubnet: the config enables a family the lease has no subnet for.
	NoSubnet
	// BadPublicIP: the public address is missing where the config needs
	// it, or is not a usable unicast address (loopback, unspecified,
	// multicast, link-local, broadcast, 0.0.0.0/8).
	BadPublicIP
	// OwnPublicIP: the public address is this host's own.
	OwnPublicIP
	// OverlapsOwn: a subnet overlaps this host's own subnet.
	OverlapsOwn
	// OverlapsPeer: a subnet overlaps that of a peer lease created
	// earlier (see Validator).
	OverlapsPeer
	// BadBackendData: the backend cannot use the lease's BackendData or
	// BackendV6Data (vxlan: a VtepMAC that is missing or not a unicast
	// Ethernet address).
	BadBackendData

	numInvalidReasons // keep last
)

// NumInvalidReasons is the number of reasons; values are 0..NumInvalidReasons-1.
const NumInvalidReasons = int(numInvalidReasons)

var invalidLabels = [numInvalidReasons]string{
	OutsideNetwork: "outside_network",
	WrongLength:    "wrong_length",
	NoSubnet:       "no_subnet",
	BadPublicIP:    "bad_public_ip",
	OwnPublicIP:    "own_public_ip",
	OverlapsOwn:    "overlaps_own",
	OverlapsPeer:   "overlaps_peer",
	BadBackendData: "bad_backend_data",
}

// String is the reason's metric label, "unknown" outside the set.
func (r InvalidReason) String() string {
	if r >= numInvalidReasons {
		return "unknown"
	}
	return invalidLabels[r]
}
