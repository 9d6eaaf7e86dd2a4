package wireguard

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Mode says how many devices carry a dual-stack network and which of a
// peer's addresses its endpoint is, as flanneld's Mode option does.
type Mode string

// The modes flanneld knows.
const (
	// Separate: one device per family, flannel-wg for IPv4 (ListenPort)
	// and flannel-wg-v6 for IPv6 (ListenPortV6), each peer reached over
	// the family it carries. flanneld's default.
	Separate Mode = "separate"
	// Auto: one device for both families; a peer is reached at its IPv4
	// address unless that is private (RFC 1918) while both ends have a
	// public IPv6 one (flanneld's selectMode).
	Auto Mode = "auto"
	// IPv4 and IPv6: one device, every peer reached at that family's address.
	IPv4 Mode = "ipv4"
	IPv6 Mode = "ipv6"
)

// Defaults are flanneld's.
const (
	DefaultListenPort   = 51820
	DefaultListenPortV6 = 51821
	// Overhead is what WireGuard adds to an inner packet, flanneld's
	// figure: outer IPv6 header 40 (IPv4: 20), UDP 8, type 4, receiver
	// index 4, counter 8, authentication tag 16. The device and pod MTU
	// is the underlay MTU less this.
	Overhead = 80
	// minMTU is IPv4's smallest MTU; minMTU6 IPv6's, which an IPv6
	// network's device needs.
	minMTU  = 68
	minMTU6 = 1280
	maxMTU  = 65535
)

// Config is the wireguard part of the network config's Backend object.
type Config struct {
	ListenPort, ListenPortV6 int
	// MTU is the underlay MTU the device's is derived from (MTU -
	// Overhead); 0 means the external interface's.
	MTU  int
	Mode Mode
	// PSK is the pre-shared key every peer gets; nil without one.
	PSK *wgtypes.Key
	// Keepalive is every peer's persistent keepalive; 0 is off.
	Keepalive time.Duration
}

// backendJSON mirrors flanneld's options. PersistentKeepaliveInterval is a
// number of seconds: flanneld decodes it as a time.Duration (nanoseconds)
// and multiplies it by a second.
type backendJSON struct {
	ListenPort                  *int64
	ListenPortV6                *int64
	MTU                         int64
	PSK                         string
	PersistentKeepaliveInterval int64
	Mode                        *Mode
}

// ParseConfig parses the network config's Backend object with flanneld's
// defaults; unknown fields are ignored, as flanneld does. Errors name the
// field (never the PSK's value: it is a secret).
func ParseConfig(data []byte) (Config, error) {
	cfg := Config{ListenPort: DefaultListenPort, ListenPortV6: DefaultListenPortV6, Mode: Separate}
	if len(bytes.TrimSpace(data)) == 0 {
		return cfg, nil
	}
	var raw backendJSON
	if err := json.Unmarshal(data, &raw); err != nil {
		return Config{}, fmt.Errorf("wireguard: Backend config: %w", err)
	}
	for _, p := range []struct {
		field string
		v     *int64
		into  *int
	}{{"ListenPort", raw.ListenPort, &cfg.ListenPort}, {"ListenPortV6", raw.ListenPortV6, &cfg.ListenPortV6}} {
		if p.v == nil {
			continue
		}
		if *p.v < 1 || *p.v > 65535 {
			return Config{}, fmt.Errorf("wireguard: Backend.%s %d out of range 1..65535", p.field, *p.v)
		}
		*p.into = int(*p.v)
	}
	if raw.MTU != 0 && (raw.MTU < minMTU+Overhead || raw.MTU > maxMTU) {
		return Config{}, fmt.Errorf("wireguard: Backend.MTU %d out of range %d..%d (the underlay MTU; the device gets MTU - %d; 0 = the interface's)",
			raw.MTU, minMTU+Overhead, maxMTU, Overhead)
	}
	cfg.MTU = int(raw.MTU)
	if raw.PersistentKeepaliveInterval < 0 || raw.PersistentKeepaliveInterval > 65535 {
		return Config{}, fmt.Errorf("wireguard: Backend.PersistentKeepaliveInterval %d out of range 0..65535 seconds", raw.PersistentKeepaliveInterval)
	}
	cfg.Keepalive = time.Duration(raw.PersistentKeepaliveInterval) * time.Second
	if raw.Mode != nil {
		switch *raw.Mode {
		case Separate, Auto, IPv4, IPv6:
			cfg.Mode = *raw.Mode
		default:
			return Config{}, fmt.Errorf("wireguard: Backend.Mode %q: want separate, auto, ipv4 or ipv6", *raw.Mode)
		}
	}
	if raw.PSK != "" {
		psk, err := wgtypes.ParseKey(raw.PSK)
		if err != nil {
			return Config{}, errors.New("wireguard: Backend.PSK is not a WireGuard key (44 characters of base64, as `wg genpsk` prints)")
		}
		cfg.PSK = &psk
	}
	return cfg, nil
}

// leaseData is BackendData and BackendV6Data: the key and the port the
// family's device listens on.
type leaseData struct {
	PublicKey string
	Port      uint16
}

// parseLeaseData reads one family's backend data of a peer lease. Absent
// data is an error: without a key there is no peer to configure.
func parseLeaseData(raw json.RawMessage) (wgtypes.Key, uint16, error) {
	if len(raw) == 0 {
		return wgtypes.Key{}, 0, errors.New("no backend data")
	}
	var d leaseData
	if err := json.Unmarshal(raw, &d); err != nil {
		return wgtypes.Key{}, 0, fmt.Errorf("backend data %s: %w", raw, err)
	}
	k, err := wgtypes.ParseKey(d.PublicKey)
	if err != nil {
		return wgtypes.Key{}, 0, fmt.Errorf("backend data PublicKey %q: %w", d.PublicKey, err)
	}
	return k, d.Port, nil
}

// marshalLeaseData is flanneld's JSON: {"PublicKey":"<base64>","Port":51820}.
func marshalLeaseData(k wgtypes.Key, port int) json.RawMessage {
	b, _ := json.Marshal(leaseData{PublicKey: k.String(), Port: uint16(port)}) // cannot fail
	return b
}
