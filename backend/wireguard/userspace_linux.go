package wireguard

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/time/rate"
	wgdevice "golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	fltun "github.com/flannelu/flannelu/tun"
)

// userDevice is WireGuard in this process: wireguard-go's device on its
// own TUN (tun.CreateTUN, with the kernel's TCP/UDP offloads and batched
// reads) and its UDP sockets (conn.StdNetBind, recvmmsg/sendmmsg with UDP
// GSO/GRO), answering wg(8) on its UAPI socket in /run/wireguard as
// standalone wireguard-go does.
type userDevice struct {
	name string
	dev  *wgdevice.Device
	uapi net.Listener
	log  *slog.Logger
}

// openUserspace opens the UAPI socket first (wireguard-go refuses one that
// another process serves: the sign of two hosts sharing one /run/wireguard,
// which must not go on to program one host's device for the other), then
// the TUN, made persistent: it outlives this process with its address and
// route, so that while flannelu restarts pod traffic to other hosts is held
// back at the device (dropped) instead of taking the default route out of
// the host unencrypted.
func openUserspace(name string, mtu int, log *slog.Logger) (*userDevice, error) {
	uapiFile, err := ipc.UAPIOpen(name)
	if err != nil {
		return nil, fmt.Errorf("wireguard: UAPI socket /var/run/wireguard/%s.sock: %w "+
			"(another process serves it: each host, or network namespace, needs a /run/wireguard of its own)", name, err)
	}
	defer uapiFile.Close() // UAPIListen works on its own duplicate
	tdev, err := tun.CreateTUN(name, mtu)
	if err != nil {
		os.Remove("/var/run/wireguard/" + name + ".sock")
		return nil, fmt.Errorf("wireguard: TUN %s: %w", name, err)
	}
	if err := fltun.PersistFile(tdev.File()); err != nil {
		tdev.Close()
		os.Remove("/var/run/wireguard/" + name + ".sock")
		return nil, fmt.Errorf("wireguard: TUN %s: %w", name, err)
	}
	d := &userDevice{name: name, log: log}
	d.dev = wgdevice.NewDevice(tdev, newBind(), deviceLogger(log))
	if d.uapi, err = ipc.UAPIListen(name, uapiFile); err != nil {
		d.dev.Close()
		os.Remove("/var/run/wireguard/" + name + ".sock")
		return nil, fmt.Errorf("wireguard: UAPI socket for %s: %w", name, err)
	}
	go d.serveUAPI()
	return d, nil
}

// serveUAPI answers wg(8) until the listener closes; each connection is
// wireguard-go's IpcHandle, which the socket's mode (0600, root) guards.
func (d *userDevice) serveUAPI() {
	for {
		c, err := d.uapi.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				d.log.Debug("UAPI socket closed", "device", d.name, "error", err)
			}
			return
		}
		go d.dev.IpcHandle(c)
	}
}

func (d *userDevice) configure(cfg wgtypes.Config) error {
	if err := d.dev.IpcSet(uapiSet(cfg)); err != nil {
		return fmt.Errorf("wireguard: configure %s: %w", d.name, err)
	}
	return nil
}

func (d *userDevice) peerKeys() ([]wgtypes.Key, error) {
	get, err := d.dev.IpcGet()
	if err != nil {
		return nil, err
	}
	var keys []wgtypes.Key
	for _, line := range strings.Split(get, "\n") {
		if v, ok := strings.CutPrefix(line, "public_key="); ok {
			var k wgtypes.Key
			if n, err := hex.Decode(k[:], []byte(v)); err == nil && n == len(k) {
				keys = append(keys, k)
			}
		}
	}
	return keys, nil
}

func (d *userDevice) up() error {
	if err := d.dev.Up(); err != nil {
		return fmt.Errorf("wireguard: %s up: %w", d.name, err)
	}
	return nil
}

// kick sends each peer a keepalive, which starts a handshake at once: a
// restarted flannelu's device has no sessions, and a peer that keeps
// sending on its old one would otherwise wait for WireGuard's
// retransmission timers (15 s) before it handshakes again. The kernel
// sends a first handshake only with a first packet; a handshake more on
// start is harmless.
func (d *userDevice) kick(keys []wgtypes.Key) {
	for _, k := range keys {
		if p := d.dev.LookupPeer(wgdevice.NoisePublicKey(k)); p != nil {
			p.SendKeepalive()
		}
	}
}

func (d *userDevice) done() <-chan struct{} { return d.dev.Wait() }

// close stops the device and removes its UAPI socket; the persistent TUN
// stays for the next run.
func (d *userDevice) close() {
	d.uapi.Close()
	d.dev.Close()
}

func (d *userDevice) fresh() bool  { return true }
func (d *userDevice) kind() string { return "userspace (wireguard-go)" }

// deviceLogger sends wireguard-go's log to slog: its verbose lines at
// debug, its errors as warnings, at most 10 and then one every 10 s (a
// failing socket or TUN would log one per packet).
func deviceLogger(log *slog.Logger) *wgdevice.Logger {
	var errs rate.Sometimes
	errs.First, errs.Interval = 10, 10*time.Second
	return &wgdevice.Logger{
		Verbosef: func(format string, args ...any) {
			if log.Enabled(context.Background(), slog.LevelDebug) {
				log.Debug("wireguard-go: " + fmt.Sprintf(format, args...))
			}
		},
		Errorf: func(format string, args ...any) {
			shown := false
			errs.Do(func() {
				shown = true
				log.Warn("wireguard-go: " + fmt.Sprintf(format, args...))
			})
			if !shown && log.Enabled(context.Background(), slog.LevelDebug) {
				log.Debug("wireguard-go: " + fmt.Sprintf(format, args...))
			}
		},
	}
}
