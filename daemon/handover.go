package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/backend/udp"
	"github.com/flannelu/flannelu/backend/wireguard"
	"github.com/flannelu/flannelu/handover"
	"github.com/flannelu/flannelu/handover/incumbent"
	"github.com/flannelu/flannelu/subnet"
	"github.com/flannelu/flannelu/subnet/etcd"
	"github.com/flannelu/flannelu/tun"
)

// errHandedOver ends a process whose successor took over: a clean exit.
var errHandedOver = errors.New("a successor took over")

// handOffer is a backend whose descriptors a successor takes over (udp).
type handOffer interface {
	// HandOff duplicates the descriptors for a successor.
	HandOff() (*udp.Inherited, error)
	// KeepDevice says whether another process uses the device and
	// sockets after Run ends (else they are retired).
	KeepDevice(keep bool)
}

// handOver is this process's part in hand-overs: the predecessor it takes
// over from (nil when none runs) and, once it forwards, the socket its
// own successor connects to.
type handOver struct {
	addr handover.Addr
	on   bool // --handover-socket is not "none"
	id   handover.Identity
	pred *handover.Predecessor
	o    *Options
	log  *slog.Logger
}

// identityOf is what this process serves, as a hand-over compares it.
func identityOf(o *Options, store string, cfg *subnet.Config, ext *backend.ExternalInterface) handover.Identity {
	id := handover.Identity{Store: store, Network: handover.NetworkOf(cfg), Backend: cfg.BackendType, Iface: ext.Iface.Name}
	if ext.ExtAddr.IsValid() {
		id.PublicIP = ext.ExtAddr.String()
	}
	if ext.ExtV6Addr.IsValid() {
		id.PublicIPv6 = ext.ExtV6Addr.String()
	}
	if cfg.BackendType == "udp" {
		id.Device = handover.UDPDevice(o.udpWorkers, o.udpOffload)
	}
	return id
}

// takeOver finds what runs on this host (see handover.Take): a flannelu
// that hands over is kept in the result.
func takeOver(ctx context.Context, o *Options, id handover.Identity, udpAddr string, log *slog.Logger) (*handOver, error) {
	h := &handOver{id: id, o: o, log: log}
	h.addr, h.on = handover.AddrFor(o.handOverSocket, o.subnetFile)
	pred, err := handover.Take(ctx, handover.Search{Addr: h.addr, On: h.on, Identity: id, Timeout: o.handOverTimeout,
		Incumbent: incumbentOptions(o, id.Backend, udpAddr), Log: log})
	if err != nil {
		return nil, err
	}
	h.pred = pred
	return h, nil
}

// incumbentOptions say where a flanneld of this host's network shows.
func incumbentOptions(o *Options, backendType, udpAddr string) incumbent.Options {
	io := incumbent.Options{SubnetFile: o.subnetFile}
	if o.healthzPort > 0 {
		io.HealthAddr = net.JoinHostPort(o.healthzIP, strconv.Itoa(o.healthzPort))
	}
	if backendType == "udp" {
		io.TUN, io.UDPAddr = tun.DefaultName, udpAddr
	}
	return io
}

// udpListenAddr is where the udp backend binds its IPv4 socket (the
// interface's address and the config's Port), "" for other backends.
func udpListenAddr(cfg *subnet.Config, ext *backend.ExternalInterface) string {
	if cfg.BackendType != "udp" || !ext.IfaceAddr.IsValid() {
		return ""
	}
	c := struct{ Port int }{Port: udp.DefaultPort}
	if err := json.Unmarshal(cfg.Backend, &c); err != nil || c.Port < 1 || c.Port > 65535 {
		return "" // the backend refuses the config
	}
	return netip.AddrPortFrom(ext.IfaceAddr, uint16(c.Port)).String()
}

// close releases a predecessor this process did not take over from
// (start-up failed): it carries on forwarding.
func (h *handOver) close(err error) {
	if h.pred != nil {
		why := "its start-up failed"
		if err != nil {
			why += ": " + err.Error()
		}
		h.pred.Abandon(why)
		h.pred = nil
	}
}

// leavesFirst names the backends that take over no descriptors while
// their device is one process's: there the predecessor leaves before its
// successor opens the device anew, the one case where it goes before the
// successor forwards.
var leavesFirst = map[string]string{
	"ipip":                "the ipip backend's userspace path takes over no descriptors (its kernel path loses nothing)",
	wireguard.BackendType: "the wireguard device is held by one process at a time: this one handshakes anew",
}

// inherit is the predecessor's udp descriptors, nil without.
func (h *handOver) inherit(backendType string) *udp.Inherited {
	if why, ok := leavesFirst[backendType]; ok && h.pred != nil {
		h.log.Info("the running flannelu leaves before this one starts", "why", why)
		if err := h.pred.Dismiss(); err != nil {
			h.log.Warn("hand-over", "error", err)
		}
		h.pred = nil
	}
	if h.pred == nil {
		return nil
	}
	return h.pred.Inherit()
}

// lease is the predecessor's lease, used as it is in etcd (acquiring it
// again would rebind the key to a new etcd lease, which the predecessor's
// keeper would take for an overwrite and write back), else acquire's: the
// Kubernetes store's lease is the node's podCIDR, whose annotations the
// predecessor published as this process would, so nothing is written.
func (h *handOver) lease(store subnet.Store, cfg *subnet.Config, attrs subnet.LeaseAttrs, acquire func() (subnet.Lease, error)) (subnet.Lease, error) {
	if _, inEtcd := store.(*etcd.Manager); h.pred == nil || !inEtcd {
		return acquire()
	}
	l := h.pred.Lease
	if !l.Attrs.Equal(attrs) || !cfg.Fits(l.Subnet, l.IPv6Subnet) {
		return subnet.Lease{}, fmt.Errorf("the running flannelu's lease (%v, %+v) is not the one this process would publish (%+v): stop it first", l.Subnet, l.Attrs, attrs)
	}
	h.log.Info("keeping the predecessor's lease", "subnet", l.Subnet, "etcd_lease", l.LeaseID)
	return l, nil
}

// run waits until the backend forwards, has the predecessor leave, then
// serves successors until one takes over (leave) or ctx ends. A
// predecessor that does not leave (it cut this process off: its own bound
// passed) keeps forwarding, and this process stops, leaving the device to
// it (fail).
func (h *handOver) run(ctx context.Context, running <-chan struct{}, lease subnet.Lease, be backend.Backend, leave func(), fail func(error)) {
	select {
	case <-running:
	case <-ctx.Done():
		return
	}
	if h.pred != nil {
		err := h.pred.Dismiss()
		h.pred = nil
		if err != nil {
			fail(err) // the device stays the predecessor's (kept since adopted)
			return
		}
		if ho, ok := be.(handOffer); ok {
			ho.KeepDevice(false)
		}
	}
	if !h.on {
		return
	}
	srv := &handover.Server{Addr: h.addr, Identity: h.id, Lease: lease, Timeout: h.o.handOverTimeout, Log: h.log,
		Leave: func() {
			if ho, ok := be.(handOffer); ok {
				ho.KeepDevice(true)
			}
			leave()
		}}
	if ho, ok := be.(handOffer); ok {
		srv.Lend = ho.HandOff
	}
	if err := srv.Run(ctx); err != nil {
		h.log.Error("hand-over socket unusable: a new flannelu on this host will wait for this one to stop", "addr", h.addr.String(), "error", err)
	}
}

// handedOver ends this process's part once a successor forwards: all of
// it, or (--after-handover=wait) all but the health server, until a signal
// ends the process. A DaemonSet pod must wait: a container that exits is
// restarted, and would take over again from its successor.
func handedOver(o *Options, cancel, stopWork context.CancelCauseFunc, log *slog.Logger) {
	if o.afterHandOver == afterHandOverWait {
		log.Info("handed over: serving /healthz only until stopped (--after-handover=wait)")
		stopWork(errHandedOver)
		return
	}
	cancel(errHandedOver)
}

// --after-handover values.
const (
	afterHandOverExit = "exit"
	afterHandOverWait = "wait"
)
