package testbed

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// WireGuardGoBinary is standalone wireguard-go (its command is named
// wireguard) where scripts/deps.sh builds it: <module root>/bin/wireguard-go.
func WireGuardGoBinary() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(root, "bin", "wireguard-go", "wireguard")
	if !isExecutable(bin) {
		return "", fmt.Errorf("testbed: standalone wireguard-go missing at %s: run `make deps` (scripts/deps.sh)", bin)
	}
	return bin, nil
}

// WireGuardLayout is a WireGuard device as flanneld's wireguard backend
// lays it out on a kernel with WireGuard: a private key file, a listen
// port, the underlay MTU less 80, the lease's network address as a host
// prefix, and one scope-link route for the whole network.
type WireGuardLayout struct {
	Dev     string       // flannel-wg
	KeyFile string       // the private key, base64 (wg genkey)
	Port    int          // ListenPort
	MTU     int          // the device's: underlay MTU - 80
	Addr    netip.Prefix // the lease's network address, /32 or /128
	Network netip.Prefix // the overlay, routed into the device
}

// WireGuardGo is standalone wireguard-go running on a host, configured by
// hand with wg(8) and ip(8): a host that runs no flannelu but a WireGuard
// device laid out as flanneld's, for interoperability tests and the
// bench's reference path. The host needs a /run/wireguard of its own
// (Options.PrivateDirs).
type WireGuardGo struct {
	Host      *Host
	Layout    WireGuardLayout
	Proc      *Proc
	PublicKey string
}

// GenWireGuardKey writes a new private key (`wg genkey`) to path, mode
// 0400 as flanneld writes its key file.
func GenWireGuardKey(path string) error {
	out, err := run("wg", "genkey")
	if err != nil {
		return err
	}
	return os.WriteFile(path, []byte(strings.TrimSpace(out)), 0o400)
}

// StartWireGuardGo starts wireguard-go in the foreground on h and gives
// its device the layout, without peers (SetPeer adds them).
func (b *Bed) StartWireGuardGo(h *Host, l WireGuardLayout) (*WireGuardGo, error) {
	bin, err := WireGuardGoBinary()
	if err != nil {
		return nil, err
	}
	w := &WireGuardGo{Host: h, Layout: l}
	if w.Proc, err = b.Start(h.NS, "wireguard-go-"+h.Name+"-"+l.Dev, bin, "-f", l.Dev); err != nil {
		return nil, err
	}
	if err := Eventually(30*time.Second, func() error {
		if w.Proc.Exited() {
			return fmt.Errorf("wireguard-go exited: %s", Tail(w.Proc.Log, 10))
		}
		_, err := h.Run("wg", "show", l.Dev)
		return err
	}); err != nil {
		return nil, err
	}
	pub, err := h.Run("sh", "-c", `wg pubkey < "$1"`, "sh", l.KeyFile)
	if err != nil {
		return nil, err
	}
	w.PublicKey = strings.TrimSpace(pub)
	for _, args := range [][]string{
		{"wg", "set", l.Dev, "private-key", l.KeyFile, "listen-port", strconv.Itoa(l.Port)},
		{"ip", "link", "set", l.Dev, "mtu", strconv.Itoa(l.MTU), "up"},
		{"ip", "addr", "add", l.Addr.String(), "dev", l.Dev},
		{"ip", "route", "replace", l.Network.String(), "dev", l.Dev, "scope", "link"},
	} {
		if _, err := h.Run(args...); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// SetPeer adds or changes a peer as flanneld's addPeer does: its key, the
// pre-shared key in pskFile (none when ""), its endpoint, and its allowed
// IPs replacing any it had.
func (w *WireGuardGo) SetPeer(publicKey string, endpoint netip.AddrPort, allowed []netip.Prefix, pskFile string) error {
	var ips []string
	for _, a := range allowed {
		ips = append(ips, a.String())
	}
	args := []string{"wg", "set", w.Layout.Dev, "peer", publicKey, "endpoint", endpoint.String(), "allowed-ips", strings.Join(ips, ",")}
	if pskFile != "" {
		args = append(args, "preshared-key", pskFile)
	}
	_, err := w.Host.Run(args...)
	return err
}
