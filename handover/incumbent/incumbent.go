// Package incumbent finds a flanneld that serves this host's network, and
// waits until it stops. A flannelu started beside a running flanneld (a
// migration: a DaemonSet's maxSurge, or an operator starting flannelu
// first) must neither fail nor touch the network state under it, and
// takes over as soon as it has gone.
//
// flanneld holds no lock file, so each sign is read from the kernel: a
// process named flanneld in this network namespace that writes this
// subnet file (seen only where the PID namespace is shared: a host, not a
// pod without hostPID); the health port held by a listener without
// SO_REUSEPORT that answers /healthz as flanneld does (flanneld binds it
// without; flannelu, an old or a new one, with); for the udp backend, the
// TUN device with a queue attached (its carrier is up only then) and the
// UDP port bound without SO_REUSEPORT (flanneld closes its socket last, as
// it exits, after its health server and device: flannelu's bind beside it
// would fail).
package incumbent

import (
	"context"
	"log/slog"
	"strings"
	"time"
)

// Options say where to look.
type Options struct {
	// SubnetFile is this flannelu's --subnet-file: a flanneld process
	// counts when it writes the same file.
	SubnetFile string
	// HealthAddr is --healthz-ip and --healthz-port joined, "" when the
	// port is 0.
	HealthAddr string
	// TUN is the udp backend's device, "" for the kernel backends.
	TUN string
	// UDPAddr is where the udp backend binds (address:port), "" for the
	// kernel backends.
	UDPAddr string
}

// pollInterval is how often Wait looks again: a take-over is due within a
// second of flanneld's exit.
const pollInterval = 100 * time.Millisecond

// Sighting is what shows that a flanneld runs.
type Sighting struct {
	opts   Options
	pids   []int  // flanneld processes
	health bool   // the health port is held by flanneld
	tun    string // the TUN device has a queue attached
	udp    bool   // the udp backend's port is bound without SO_REUSEPORT
}

// Find looks once; nil when no sign of a flanneld is seen.
func Find(ctx context.Context, o Options) *Sighting {
	s := &Sighting{opts: o, pids: flanneldPIDs(o.SubnetFile)}
	if o.HealthAddr != "" && portHeld(o.HealthAddr) {
		s.health = answersAsFlanneld(ctx, o.HealthAddr)
	}
	if o.TUN != "" && tunHeld(o.TUN) {
		s.tun = o.TUN
	}
	s.udp = o.UDPAddr != "" && udpPortHeld(o.UDPAddr)
	if !s.seen() {
		return nil
	}
	return s
}

func (s *Sighting) seen() bool { return len(s.pids) > 0 || s.health || s.tun != "" || s.udp }

func (s *Sighting) String() string {
	var signs []string
	if len(s.pids) > 0 {
		signs = append(signs, "flanneld process "+joinInts(s.pids)+" writes "+s.opts.SubnetFile)
	}
	if s.health {
		signs = append(signs, "flanneld holds the health port "+s.opts.HealthAddr)
	}
	if s.tun != "" {
		signs = append(signs, "another process holds the TUN device "+s.tun)
	}
	if s.udp {
		signs = append(signs, "another process holds UDP "+s.opts.UDPAddr+" without SO_REUSEPORT")
	}
	return strings.Join(signs, "; ")
}

// Wait returns once every sign is gone, or with ctx's error.
func (s *Sighting) Wait(ctx context.Context) error {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for s.still() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// still looks again at the signs seen.
func (s *Sighting) still() bool {
	pids := s.pids[:0]
	for _, pid := range s.pids {
		if alive(pid) {
			pids = append(pids, pid)
		}
	}
	s.pids = pids
	s.health = s.health && portHeld(s.opts.HealthAddr)
	if s.tun != "" && !tunHeld(s.tun) {
		s.tun = ""
	}
	s.udp = s.udp && udpPortHeld(s.opts.UDPAddr)
	return s.seen()
}

// Waiting is Log's message.
const Waiting = "flanneld runs on this host: waiting for it to stop before touching the network (subnet file, rules, devices, routes)"

// Log logs what is waited for.
func (s *Sighting) Log(log *slog.Logger) { log.Warn(Waiting, "seen", s.String()) }
