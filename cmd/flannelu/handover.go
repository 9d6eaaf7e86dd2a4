package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/backend/udp"
	"github.com/flannelu/flannelu/subnet"
)

// The hand-over: a flannelu started on a host where one already runs
// (an upgrade: a DaemonSet with maxSurge, or an operator starting the new
// binary) takes over without a lost packet. The running one listens on a
// Unix socket (--handover-socket). The new one connects and says hello;
// the old one answers with its lease and, for udp, duplicates of its TUN
// queues and sockets (SCM_RIGHTS), and keeps forwarding. The new one uses
// the same lease (no etcd write: one key, one etcd lease, both keepers
// renewing it), starts its backend on the same queues and sockets, and
// once it forwards says leave. The old one stops reading, forwards what
// it has read, closes its descriptors (the kernel objects live on in the
// new process, with whatever is queued in them) and exits 0, leaving the
// device, the route and the lease in place.
const (
	opHello = "hello" // successor -> running: who are you?
	opState = "state" // running -> successor: lease and descriptors
	opLeave = "leave" // successor -> running: I forward now, go
	opBye   = "bye"   // running -> successor: leaving
)

// handOverMsg is one message, one SOCK_SEQPACKET packet of JSON.
type handOverMsg struct {
	Op      string        `json:"op"`
	PID     int           `json:"pid,omitempty"`
	Backend string        `json:"backend,omitempty"`
	Lease   *subnet.Lease `json:"lease,omitempty"`
	// The udp backend's flags: its descriptors are taken over only by a
	// successor with the same ones.
	UDPWorkers int  `json:"udpWorkers,omitempty"`
	UDPOffload bool `json:"udpOffload,omitempty"`
	// Queues is how many of the attached descriptors are TUN queues; the
	// rest are UDP sockets, the last Sockets6 of them IPv6 ones.
	Queues   int `json:"queues,omitempty"`
	Sockets6 int `json:"sockets6,omitempty"`
	// TakesIPv6 in a hello says that the successor takes IPv6 sockets
	// (Sockets6): a predecessor sends them only then, so that a successor
	// of a version without them still gets what it expects.
	TakesIPv6 bool `json:"takesIPv6,omitempty"`
}

// handOverTimeout bounds each exchange but the wait for "leave" (the
// successor's start-up takes what it takes).
const handOverTimeout = 30 * time.Second

// errHandedOver ends a process whose successor took over: a clean exit.
var errHandedOver = errors.New("a successor took over")

// maxHandOverFiles bounds the descriptors of one message: a TUN queue,
// an IPv4 and an IPv6 socket per udp worker (at most 64).
const maxHandOverFiles = 3 * 64

// handOverPath is --handover-socket: by default flannelu.sock beside the
// subnet file, so that two flannelus share it exactly when they share
// subnet.env, that is, when they serve the same host.
func handOverPath(o *options) string {
	switch o.handOverSocket {
	case "none":
		return ""
	case "":
		return filepath.Join(filepath.Dir(o.subnetFile), "flannelu.sock")
	}
	return o.handOverSocket
}

// predecessor is the flannelu that runs on this host and hands over to
// this one.
type predecessor struct {
	conn  *net.UnixConn
	state handOverMsg
	files []*os.File
	log   *slog.Logger
}

// findPredecessor asks the flannelu listening on path, if there is one,
// for its state; nil when none listens.
func findPredecessor(ctx context.Context, path string, log *slog.Logger) (*predecessor, error) {
	if path == "" {
		return nil, nil
	}
	d := net.Dialer{Timeout: handOverTimeout}
	c, err := d.DialContext(ctx, "unixpacket", path)
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
		return nil, nil // nobody runs, or a crashed process left its socket
	}
	if err != nil {
		return nil, fmt.Errorf("hand-over socket %s: %w", path, err)
	}
	p := &predecessor{conn: c.(*net.UnixConn), log: log}
	if err := p.hello(); err != nil {
		p.conn.Close()
		return nil, fmt.Errorf("hand-over from the flannelu on %s: %w", path, err)
	}
	log.Info("a flannelu runs on this host: taking over from it", "pid", p.state.PID, "backend", p.state.Backend,
		"subnet", p.state.Lease.Subnet, "descriptors", len(p.files))
	return p, nil
}

func (p *predecessor) hello() error {
	p.conn.SetDeadline(time.Now().Add(handOverTimeout)) //nolint:errcheck // a socket always takes one
	if err := sendMsg(p.conn, handOverMsg{Op: opHello, PID: os.Getpid(), TakesIPv6: true}, nil); err != nil {
		return err
	}
	msg, files, err := receiveMsg(p.conn)
	if err == nil && (msg.Op != opState || msg.Lease == nil || msg.Queues < 0 || msg.Sockets6 < 0 ||
		msg.Queues+msg.Sockets6 > len(files)) {
		err = fmt.Errorf("unexpected answer %+v with %d descriptors", msg, len(files))
	}
	if err != nil {
		closeFiles(files)
		return err
	}
	p.state, p.files = msg, files
	return nil
}

// lease is the predecessor's lease when this process would publish the
// same (same backend, attributes, and a subnet the config still fits). In
// etcd it is used as it is: acquiring again would rebind the key to a new
// etcd lease, which the predecessor's keeper would take for an overwrite
// and write back. The Kubernetes store's lease is the node's, acquired
// again without a change.
func (p *predecessor) lease(store subnet.Store, cfg *subnet.Config, attrs subnet.LeaseAttrs) (subnet.Lease, bool) {
	if p == nil {
		return subnet.Lease{}, false
	}
	l := *p.state.Lease
	if _, etcd := store.(*subnet.Manager); !etcd || p.state.Backend != cfg.BackendType ||
		!l.Attrs.Equal(attrs) || !cfg.Fits(l.Subnet, l.IPv6Subnet) {
		return subnet.Lease{}, false
	}
	return l, true
}

// inherit returns the predecessor's udp descriptors when this process runs
// the udp backend with the same flags, else nil (and closes them).
func (p *predecessor) inherit(backendType string, o *options) *udp.Inherited {
	if p == nil {
		return nil
	}
	files := p.files
	p.files = nil
	if backendType != "udp" || p.state.Backend != "udp" || len(files) == 0 ||
		p.state.UDPWorkers != o.udpWorkers || p.state.UDPOffload != o.udpOffload {
		closeFiles(files)
		return nil
	}
	v6 := len(files) - p.state.Sockets6
	return &udp.Inherited{Queues: files[:p.state.Queues], Sockets: files[p.state.Queues:v6], Sockets6: files[v6:]}
}

// dismiss tells the predecessor to leave and waits until it says it does.
func (p *predecessor) dismiss() error {
	defer p.conn.Close()
	p.conn.SetDeadline(time.Now().Add(handOverTimeout)) //nolint:errcheck // a socket always takes one
	if err := sendMsg(p.conn, handOverMsg{Op: opLeave, PID: os.Getpid()}, nil); err != nil {
		return fmt.Errorf("hand-over: ask the predecessor to leave: %w", err)
	}
	msg, files, err := receiveMsg(p.conn)
	closeFiles(files)
	switch {
	case err != nil && !errors.Is(err, errPeerClosed):
		return fmt.Errorf("hand-over: the predecessor's answer to leave: %w", err)
	case err == nil && msg.Op != opBye:
		return fmt.Errorf("hand-over: the predecessor answered leave with %q", msg.Op)
	}
	p.log.Info("the predecessor leaves: this process forwards alone", "pid", p.state.PID)
	return nil
}

// errPeerClosed: the other end closed the connection.
var errPeerClosed = errors.New("hand-over connection closed")

func sendMsg(c *net.UnixConn, msg handOverMsg, files []*os.File) error {
	b, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd()) // a duplicate of our own: blocking or not, nobody reads it here
		}
		oob = syscall.UnixRights(fds...)
	}
	_, _, err = c.WriteMsgUnix(b, oob, nil)
	return err
}

func receiveMsg(c *net.UnixConn) (handOverMsg, []*os.File, error) {
	buf := make([]byte, 64<<10)
	oob := make([]byte, syscall.CmsgSpace(4*maxHandOverFiles))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	files := filesOf(oob[:oobn])
	var msg handOverMsg
	switch {
	case err != nil:
	case n == 0:
		err = errPeerClosed
	case flags&(syscall.MSG_TRUNC|syscall.MSG_CTRUNC) != 0:
		err = errors.New("hand-over message truncated")
	default:
		err = json.Unmarshal(buf[:n], &msg)
	}
	if err != nil {
		closeFiles(files)
		return handOverMsg{}, nil, err
	}
	return msg, files, nil
}

// filesOf wraps the descriptors of SCM_RIGHTS messages. Non-blocking ones
// stay so: os.NewFile then leaves them be (Fd does not clear O_NONBLOCK,
// which the sending process shares).
func filesOf(oob []byte) []*os.File {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := syscall.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			syscall.CloseOnExec(fd)
			files = append(files, os.NewFile(uintptr(fd), "inherited"))
		}
	}
	return files
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// handOver is this process's part in hand-overs: the predecessor it takes
// over from (nil when none runs) and, once it runs, the socket its own
// successor connects to.
type handOver struct {
	path  string
	pred  *predecessor
	state handOverMsg
	be    backend.Backend
	log   *slog.Logger
}

// startHandOver looks for a predecessor on this host.
func startHandOver(ctx context.Context, o *options, log *slog.Logger) (*handOver, error) {
	h := &handOver{path: handOverPath(o), log: log}
	var err error
	h.pred, err = findPredecessor(ctx, h.path, log)
	return h, err
}

// close releases a predecessor this process did not take over from
// (start-up failed): it carries on forwarding.
func (h *handOver) close() {
	if h.pred != nil {
		closeFiles(h.pred.files)
		h.pred.conn.Close()
	}
}

// inherit is the predecessor's udp descriptors, when they fit this
// process's flags. Otherwise a udp predecessor must leave first: its
// device and port are not free.
func (h *handOver) inherit(backendType string, o *options) *udp.Inherited {
	inh := h.pred.inherit(backendType, o)
	if inh == nil && h.pred != nil && h.pred.state.Backend == "udp" {
		h.dismiss("its udp flags differ (--udp-workers, --udp-offload): this one opens the device anew")
	}
	// ipip's userspace path holds a TUN queue and a raw socket too, and
	// hands neither over: it leaves first (its kernel path loses nothing).
	if h.pred != nil && h.pred.state.Backend == "ipip" {
		h.dismiss("the ipip backend hands over no descriptors: this one opens the device anew")
	}
	return inh
}

// lease is the predecessor's lease when it fits (predecessor.lease), else
// acquire's, once the predecessor has left (its keeper would fight ours).
func (h *handOver) lease(store subnet.Store, cfg *subnet.Config, attrs subnet.LeaseAttrs, acquire func() (subnet.Lease, error)) (subnet.Lease, error) {
	if l, ok := h.pred.lease(store, cfg, attrs); ok {
		h.log.Info("keeping the predecessor's lease", "subnet", l.Subnet, "etcd_lease", l.LeaseID)
		return l, nil
	}
	h.dismiss("its lease is not this process's to share")
	return acquire()
}

// dismiss has the predecessor leave now, before this process forwards:
// the stall is then the time between.
func (h *handOver) dismiss(why string) {
	if h.pred == nil {
		return
	}
	if why != "" {
		h.log.Info("the running flannelu leaves before this one starts", "why", why)
	}
	if err := h.pred.dismiss(); err != nil {
		h.log.Warn("hand-over", "error", err)
	}
	h.pred = nil
}

// serve records what a successor will be told.
func (h *handOver) serve(o *options, cfg *subnet.Config, lease subnet.Lease, be backend.Backend) {
	h.state = handOverMsg{Op: opState, PID: os.Getpid(), Backend: cfg.BackendType, Lease: &lease,
		UDPWorkers: o.udpWorkers, UDPOffload: o.udpOffload}
	h.be = be
}

// run waits until the backend runs, has the predecessor leave, then
// serves successors until one takes over (leave) or ctx ends.
func (h *handOver) run(ctx context.Context, running <-chan struct{}, leave func()) {
	select {
	case <-running:
	case <-ctx.Done():
		return
	}
	h.dismiss("")
	if h.path == "" {
		return
	}
	srv := &handOverServer{path: h.path, state: h.state, be: h.be, leave: leave, log: h.log}
	if err := srv.run(ctx); err != nil {
		h.log.Error("hand-over socket unusable: a new flannelu on this host will wait for this one to stop", "path", h.path, "error", err)
	}
}

// handedOver ends this process's part once a successor forwards: all of
// it, or (--after-handover=wait) all but the health server, until a signal
// ends the process. A DaemonSet pod must wait: a container that exits is
// restarted, and would take over again from its successor.
func handedOver(o *options, cancel, stopWork context.CancelCauseFunc, log *slog.Logger) {
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
