package wireguard

import (
	"encoding/hex"
	"net"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	wgdevice "golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// TestUAPISetProgramsWireguardGo applies uapiSet's text to a real
// wireguard-go device (on an in-memory TUN and bind) and reads the
// device back: what wgctrl would have set on a kernel device.
func TestUAPISetProgramsWireguardGo(t *testing.T) {
	dev := wgdevice.NewDevice(tuntest.NewChannelTUN().TUN(), parseOnlyBind{conn.NewStdNetBind()}, wgdevice.NewLogger(wgdevice.LogLevelSilent, ""))
	defer dev.Close()
	priv, _ := wgtypes.GeneratePrivateKey()
	psk, _ := wgtypes.GenerateKey()
	port, keepalive := 51820, 25*time.Second
	peerCfg := func(k wgtypes.Key, ep string, allowed ...string) wgtypes.PeerConfig {
		pc := wgtypes.PeerConfig{PublicKey: k, PresharedKey: &psk, PersistentKeepaliveInterval: &keepalive, ReplaceAllowedIPs: true}
		pc.Endpoint, _ = net.ResolveUDPAddr("udp", ep)
		for _, a := range allowed {
			_, n, _ := net.ParseCIDR(a)
			pc.AllowedIPs = append(pc.AllowedIPs, *n)
		}
		return pc
	}
	set := func(cfg wgtypes.Config) {
		t.Helper()
		if err := dev.IpcSet(uapiSet(cfg)); err != nil {
			t.Fatalf("IpcSet:\n%s: %v", uapiSet(cfg), err)
		}
	}
	set(wgtypes.Config{PrivateKey: &priv, ListenPort: &port, ReplacePeers: true})
	set(wgtypes.Config{Peers: []wgtypes.PeerConfig{
		peerCfg(keyA, "192.0.2.2:51820", "198.18.2.0/24"),
		peerCfg(keyB, "[2001:db8:0:1::3]:51821", "198.18.3.0/24", "2001:db8:100:3::/64"),
	}})
	get, err := dev.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"private_key=" + hex.EncodeToString(priv[:]),
		"listen_port=51820",
		"public_key=" + hex.EncodeToString(keyA[:]) + "\npreshared_key=" + hex.EncodeToString(psk[:]),
		"endpoint=192.0.2.2:51820",
		"persistent_keepalive_interval=25",
		"allowed_ip=198.18.2.0/24",
		"endpoint=[2001:db8:0:1::3]:51821",
		"allowed_ip=198.18.3.0/24\nallowed_ip=2001:db8:100:3::/64",
	} {
		if !strings.Contains(get, want) {
			t.Errorf("device lacks %q:\n%s", want, get)
		}
	}
	// Removal by key; a replaced allowed IP list.
	set(wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: keyA, Remove: true}, peerCfg(keyB, "[2001:db8:0:1::3]:51821", "198.18.4.0/24")}})
	get, _ = dev.IpcGet()
	if strings.Contains(get, hex.EncodeToString(keyA[:])) || strings.Contains(get, "198.18.3.0/24") || !strings.Contains(get, "allowed_ip=198.18.4.0/24") {
		t.Errorf("after removing A and replacing B's allowed IPs:\n%s", get)
	}
}

// parseOnlyBind is StdNetBind's endpoint parsing without its sockets: the
// device under test keeps the endpoints it is given and opens no port.
type parseOnlyBind struct{ conn.Bind }

func (parseOnlyBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) { return nil, port, nil }
func (parseOnlyBind) Close() error                                         { return nil }
func (parseOnlyBind) Send([][]byte, conn.Endpoint) error                   { return nil }
