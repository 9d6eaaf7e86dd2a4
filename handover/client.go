package handover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/flannelu/flannelu/backend/udp"
	"github.com/flannelu/flannelu/subnet"
)

// Predecessor is the running flannelu that hands over to this one.
type Predecessor struct {
	PID      int // as it says: its PID in its own PID namespace
	Lease    subnet.Lease
	conn     *net.UnixConn
	files    []*os.File
	queues   int
	sockets6 int
	log      *slog.Logger
}

// Refusal is a hand-over that does not happen, and why. A refusal that is
// not Foreign comes from a flannelu that serves this host's network
// namespace with another identity (or this one found its answer wrong):
// starting beside it would change what it runs, so the new one waits
// (Wait) until it stops. A Foreign one (another user, another network
// namespace) shares nothing: the new one starts as if nobody ran.
type Refusal struct {
	PID     int
	Reason  string
	Foreign bool
	conn    *net.UnixConn
}

func (r *Refusal) Error() string {
	return fmt.Sprintf("the flannelu on the hand-over socket (pid %d) is not this one's predecessor: %s", r.PID, r.Reason)
}

// NotTakingOver is the successor's line for a refusal.
const NotTakingOver = "not taking over from the process on the hand-over socket"

func (r *Refusal) log(log *slog.Logger, a Addr) {
	then := "waiting until it stops"
	if r.Foreign {
		then = "it shares nothing with this one: starting as if it did not run"
	}
	log.Warn(NotTakingOver, "addr", a.String(), "pid", r.PID, "reason", r.Reason, "next", then)
}

// Wait blocks until the refusing flannelu stops (it holds the connection
// open until then) or ctx ends.
func (r *Refusal) Wait(ctx context.Context) error {
	if r.conn == nil {
		return nil
	}
	defer r.conn.Close()
	stop := context.AfterFunc(ctx, func() { r.conn.Close() })
	defer stop()
	r.conn.SetDeadline(time.Time{}) //nolint:errcheck // a socket always takes one
	for {
		_, files, err := receive(r.conn)
		closeFiles(files)
		if err != nil {
			return ctx.Err()
		}
	}
}

// Find asks the flannelu listening on a, if there is one, to hand over to
// this one, whose identity is id. It returns nil, nil when none listens
// there (or a symlink or another file stands where a socket file should:
// it is never followed), the predecessor when it lends its state, a
// *Refusal, or another error when the exchange failed. timeout bounds the
// wait for the answer, beyond the running one's own bound for a successor
// it may be serving first.
func Find(ctx context.Context, a Addr, id Identity, timeout time.Duration, log *slog.Logger) (*Predecessor, error) {
	c, err := a.dial(ctx)
	if errors.Is(err, errNotFollowed) {
		log.Warn("not following the hand-over socket path: starting as if no flannelu ran", "error", err)
		return nil, nil
	}
	if c == nil || err != nil {
		return nil, err
	}
	p, err := ask(c, a, id, timeout, log)
	if err != nil {
		var r *Refusal
		if !errors.As(err, &r) || r.conn == nil {
			c.Close()
		}
		return nil, err
	}
	return p, nil
}

// ask checks who listens, says hello and checks the answer.
func ask(c *net.UnixConn, a Addr, id Identity, timeout time.Duration, log *slog.Logger) (*Predecessor, error) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	c.SetDeadline(time.Now().Add(helloTimeout + timeout)) //nolint:errcheck // a socket always takes one
	p, err := peerOf(c)
	var foreign bool
	if err == nil {
		foreign, err = p.check(a.Abstract)
	}
	if err != nil {
		r := &Refusal{PID: p.pid, Reason: err.Error(), Foreign: foreign}
		send(c, message{Op: opRefuse, PID: os.Getpid(), Reason: "the new flannelu refuses: " + err.Error(), Foreign: foreign}, nil) //nolint:errcheck // it may be gone
		r.log(log, a)
		return nil, r
	}
	if err := send(c, message{Op: opHello, PID: os.Getpid(), Identity: &id}, nil); err != nil {
		return nil, fmt.Errorf("hand-over hello on %s: %w", a, err)
	}
	m, files, err := receive(c)
	if err != nil {
		return nil, fmt.Errorf("hand-over answer on %s: %w", a, err)
	}
	switch {
	case m.Op == opRefuse:
		closeFiles(files)
		r := &Refusal{PID: m.PID, Reason: "it refused: " + m.Reason, Foreign: m.Foreign}
		if !m.Foreign {
			r.conn = c
		}
		r.log(log, a)
		return nil, r
	case m.Op != opState || m.Lease == nil || m.Identity == nil || m.Queues < 0 || m.Sockets6 < 0 || m.Queues+m.Sockets6 > len(files):
		closeFiles(files)
		return nil, fmt.Errorf("hand-over on %s: unexpected answer %q with %d descriptors", a, m.Op, len(files))
	}
	if why := differs(id, *m.Identity); why != "" {
		// It took this hello for its successor's, and answered with the
		// state of another network: not a flannelu to wait for.
		closeFiles(files)
		send(c, message{Op: opRefuse, PID: os.Getpid(), Reason: "its state is another network's (" + differs(*m.Identity, id) + ")"}, nil) //nolint:errcheck // it may be gone
		return nil, fmt.Errorf("hand-over on %s: pid %d answered with the state of another network (%s)", a, m.PID, why)
	}
	log.Info("a flannelu runs on this host: taking over from it", "pid", m.PID, "subnet", m.Lease.Subnet, "descriptors", len(files))
	c.SetDeadline(time.Time{}) //nolint:errcheck // a socket always takes one
	return &Predecessor{PID: m.PID, Lease: *m.Lease, conn: c, files: files, queues: m.Queues, sockets6: m.Sockets6, log: log}, nil
}

// Inherit takes the predecessor's udp descriptors (nil when it lent none);
// the caller owns them.
func (p *Predecessor) Inherit() *udp.Inherited {
	files := p.files
	p.files = nil
	if len(files) == 0 {
		return nil
	}
	v6 := len(files) - p.sockets6
	return &udp.Inherited{Queues: files[:p.queues], Sockets: files[p.queues:v6], Sockets6: files[v6:]}
}

// Dismiss tells the predecessor that this process forwards and waits until
// it says it leaves.
func (p *Predecessor) Dismiss() error {
	defer p.conn.Close()
	closeFiles(p.files)
	p.conn.SetDeadline(time.Now().Add(helloTimeout)) //nolint:errcheck // a socket always takes one
	if err := send(p.conn, message{Op: opLeave, PID: os.Getpid()}, nil); err != nil {
		return fmt.Errorf("hand-over: ask the predecessor to leave: %w", err)
	}
	m, files, err := receive(p.conn)
	closeFiles(files)
	switch {
	case err != nil && !errors.Is(err, errPeerClosed):
		return fmt.Errorf("hand-over: the predecessor's answer to leave: %w", err)
	case err == nil && m.Op != opBye:
		return fmt.Errorf("hand-over: the predecessor answered leave with %q", m.Op)
	}
	p.log.Info("the predecessor leaves: this process forwards alone", "pid", p.PID)
	return nil
}

// Abandon tells the predecessor that this process failed before it
// forwarded: the predecessor carries on.
func (p *Predecessor) Abandon(why string) {
	closeFiles(p.files)
	p.files = nil
	p.conn.SetDeadline(time.Now().Add(time.Second))                         //nolint:errcheck // a socket always takes one
	send(p.conn, message{Op: opRefuse, PID: os.Getpid(), Reason: why}, nil) //nolint:errcheck // it may be gone
	p.conn.Close()
}
