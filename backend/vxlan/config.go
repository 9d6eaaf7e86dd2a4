package vxlan

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
)

// Defaults are flannel's.
const (
	DefaultVNI  = 1
	DefaultPort = 8472 // the Linux kernel's historical VXLAN port, which flannel keeps
	maxVNI      = 1<<24 - 1
	minMTU      = 68 // the smallest MTU IPv4 allows
	maxMTU      = 65535
	// Overhead is what VXLAN encapsulation adds over IPv4: outer IP 20,
	// UDP 8, VXLAN 8, inner Ethernet 14.
	Overhead = 50
	// OverheadV6 is the same over an IPv6 underlay (outer IP 40): the
	// kernel caps flannel-v6.<VNI>'s MTU at the underlay's minus this,
	// whatever flanneld asks for.
	OverheadV6 = 70
)

// Config is the vxlan part of the network config's Backend object.
type Config struct {
	VNI           int  // 0..16777215; the device is flannel.<VNI>
	Port          int  // UDP destination port, 1..65535
	GBP           bool // VXLAN group-based policy extension
	Learning      bool // kernel fdb learning; flannel programs the fdb itself, so off
	DirectRouting bool // peers on the same link get a plain route, no encapsulation
	// MTU is the underlay MTU, as flanneld v0.28 reads Backend.MTU: the
	// device and the pods (subnet.env) get MTU - Overhead. 0: the
	// external interface's MTU.
	MTU int
}

// backendJSON mirrors the config object. Pointers tell "absent" from an
// explicit zero, because flannel fills its defaults first and lets the
// JSON override them.
type backendJSON struct {
	Type          string
	VNI           *int64
	Port          *int64
	GBP           bool
	Learning      bool
	DirectRouting bool
	MTU           int64
}

// ParseConfig parses the network config's Backend object. Absent fields
// get flannel's defaults; unknown fields are ignored as flanneld does.
// Port 0 means the default, as in flanneld (it leaves the port to the
// kernel, which picks 8472). Errors name the field.
func ParseConfig(data []byte) (Config, error) {
	cfg := Config{VNI: DefaultVNI, Port: DefaultPort}
	if len(bytes.TrimSpace(data)) == 0 {
		return cfg, nil
	}
	var raw backendJSON
	if err := json.Unmarshal(data, &raw); err != nil {
		return Config{}, fmt.Errorf("vxlan: Backend config: %w", err)
	}
	if raw.Type != "" && !strings.EqualFold(raw.Type, "vxlan") {
		return Config{}, fmt.Errorf("vxlan: Backend.Type is %q, not \"vxlan\"", raw.Type)
	}
	if raw.VNI != nil {
		if *raw.VNI < 0 || *raw.VNI > maxVNI {
			return Config{}, fmt.Errorf("vxlan: Backend.VNI %d out of range 0..%d", *raw.VNI, maxVNI)
		}
		cfg.VNI = int(*raw.VNI)
	}
	if raw.Port != nil && *raw.Port != 0 {
		if *raw.Port < 1 || *raw.Port > 65535 {
			return Config{}, fmt.Errorf("vxlan: Backend.Port %d out of range 1..65535", *raw.Port)
		}
		cfg.Port = int(*raw.Port)
	}
	if raw.MTU != 0 && (raw.MTU < minMTU+Overhead || raw.MTU > maxMTU) {
		return Config{}, fmt.Errorf("vxlan: Backend.MTU %d out of range %d..%d (the underlay MTU, as flanneld v0.28 reads it: the device and pods get MTU - %d; 0 = the interface's MTU)",
			raw.MTU, minMTU+Overhead, maxMTU, Overhead)
	}
	cfg.MTU = int(raw.MTU)
	cfg.GBP, cfg.Learning, cfg.DirectRouting = raw.GBP, raw.Learning, raw.DirectRouting
	return cfg, nil
}

// DeviceName is flannel's name for the VXLAN device of a VNI.
func DeviceName(vni int) string { return fmt.Sprintf("flannel.%d", vni) }

// DeviceNameV6 is flannel's name for the IPv6 VXLAN device of a VNI.
func DeviceNameV6(vni int) string { return fmt.Sprintf("flannel-v6.%d", vni) }

// LeaseData is the BackendData a vxlan host publishes in its lease:
// {"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}, the field order flannel writes.
type LeaseData struct {
	VNI     int
	VtepMAC net.HardwareAddr
}

type leaseDataJSON struct {
	VNI     int    `json:"VNI"`
	VtepMAC string `json:"VtepMAC"`
}

// MarshalJSON writes flannel's form, the MAC in lower-case colon notation.
func (d LeaseData) MarshalJSON() ([]byte, error) {
	return json.Marshal(leaseDataJSON{VNI: d.VNI, VtepMAC: d.VtepMAC.String()})
}

var errNoBackendData = errors.New("vxlan: lease has no BackendData")

// ParseLeaseData parses a peer's BackendData. The VtepMAC must be a
// 6-byte unicast Ethernet address: it becomes a permanent neighbour and
// fdb entry, and a multicast or zero MAC there would flood or blackhole.
func ParseLeaseData(data []byte) (LeaseData, error) {
	if len(bytes.TrimSpace(data)) == 0 || bytes.Equal(bytes.TrimSpace(data), []byte("null")) {
		return LeaseData{}, errNoBackendData
	}
	var raw leaseDataJSON
	if err := json.Unmarshal(data, &raw); err != nil {
		return LeaseData{}, fmt.Errorf("vxlan: BackendData: %w", err)
	}
	if raw.VNI < 0 || raw.VNI > maxVNI {
		return LeaseData{}, fmt.Errorf("vxlan: BackendData.VNI %d out of range 0..%d", raw.VNI, maxVNI)
	}
	mac, err := net.ParseMAC(raw.VtepMAC)
	if err != nil {
		return LeaseData{}, fmt.Errorf("vxlan: BackendData.VtepMAC: %w", err)
	}
	if len(mac) != 6 {
		return LeaseData{}, fmt.Errorf("vxlan: BackendData.VtepMAC %q is not a 6-byte Ethernet address", raw.VtepMAC)
	}
	if mac[0]&1 != 0 || bytes.Equal(mac, make([]byte, 6)) {
		return LeaseData{}, fmt.Errorf("vxlan: BackendData.VtepMAC %q is not a unicast address", raw.VtepMAC)
	}
	return LeaseData{VNI: raw.VNI, VtepMAC: mac}, nil
}
