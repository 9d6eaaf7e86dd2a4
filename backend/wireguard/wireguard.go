// Package wireguard is flannel's wireguard backend: pod traffic between
// hosts encrypted by WireGuard, each host a peer of every other, exactly
// as flanneld's pkg/backend/wireguard lays it out (devices flannel-wg and
// flannel-wg-v6, the lease's BackendData {"PublicKey","Port"}, one route
// for the whole network, each peer's AllowedIPs its subnets). Where the
// kernel has WireGuard the device is the kernel's, configured as flanneld
// configures it; where it has none the device is wireguard-go's, run in
// this process on a TUN of the same name, which `wg show` reads through
// its UAPI socket as it reads standalone wireguard-go's.
package wireguard

import (
	"log/slog"
	"net/netip"

	"github.com/flannelu/flannelu/internal/metrics"
)

// BackendType is the lease BackendType this backend publishes and accepts.
const BackendType = "wireguard"

// Device names are flanneld's.
const (
	DeviceName   = "flannel-wg"
	DeviceNameV6 = "flannel-wg-v6"
)

// Options configure New.
type Options struct {
	Network     netip.Prefix // the IPv4 overlay; zero for an IPv6-only network
	IPv6Network netip.Prefix // the IPv6 overlay; zero without IPv6
	BackendJSON []byte       // the config's Backend object
	// KeyFile holds the private key both devices share; created when
	// missing. Default DefaultKeyFile.
	KeyFile string
	// DeviceName and DeviceNameV6 replace flanneld's names (tests).
	DeviceName, DeviceNameV6 string
	Logger                   *slog.Logger
	// Metrics receives flannelu_peer_errors_total and
	// flannelu_wireguard_peers; nil exports them nowhere.
	Metrics *metrics.Registry
}
