// Package handover moves a running flannelu's work to its successor on the
// same host without a lost packet: an upgrade (a DaemonSet with maxSurge,
// or an operator starting the new binary beside the old one).
//
// The running flannelu (Server) listens on a Unix socket (Addr: by default
// an abstract one, which the kernel scopes to the network namespace). A new
// one (Find) connects and says hello with its Identity: the store, the
// network config, the backend, the interface and the public address it
// would serve. The running one checks who connected (same user, same
// network namespace, same identity) and only then answers with its lease
// and, for the udp backend, duplicates of its TUN queues and UDP sockets
// (SCM_RIGHTS), and keeps forwarding. The new one checks the answer the
// same way, starts on the same lease, queues and sockets, and once it
// forwards says leave; the running one stops reading, forwards what it
// has read and leaves the device, the route and the lease to it.
//
// Anything else is refused, with one log line on each side, and changes
// nothing that runs: a process of another user or network namespace, of
// another network, or one that does not finish within Server.Timeout.
package handover

import (
	"encoding/json"
	"errors"
	"net"
	"os"
	"strconv"
	"syscall"

	"github.com/flannelu/flannelu/subnet"
)

// Protocol messages, each one SOCK_SEQPACKET packet of JSON.
const (
	opHello  = "hello"  // successor -> running: who it is
	opState  = "state"  // running -> successor: the lease and the descriptors
	opRefuse = "refuse" // either way: not a hand-over between these two, and why
	opLeave  = "leave"  // successor -> running: it forwards now; go
	opBye    = "bye"    // running -> successor: leaving
)

// version is the protocol's: a peer speaking another is refused.
const version = 2

// message is one protocol message.
type message struct {
	Op       string    `json:"op"`
	Version  int       `json:"version,omitempty"`
	PID      int       `json:"pid,omitempty"`
	Identity *Identity `json:"identity,omitempty"`
	// Reason is a refusal's, for the log on the other side.
	Reason string `json:"reason,omitempty"`
	// Foreign in a refusal says that the two share nothing (another
	// network namespace): the successor starts as if nobody ran.
	Foreign bool          `json:"foreign,omitempty"`
	Lease   *subnet.Lease `json:"lease,omitempty"`
	// Queues is how many of a state's descriptors are TUN queues; the
	// rest are UDP sockets, the last Sockets6 of them IPv6 ones.
	Queues   int `json:"queues,omitempty"`
	Sockets6 int `json:"sockets6,omitempty"`
}

// maxFiles bounds the descriptors of one message: a TUN queue, an IPv4 and
// an IPv6 socket per udp worker (at most 64).
const maxFiles = 3 * 64

// errPeerClosed: the other end closed the connection.
var errPeerClosed = errors.New("hand-over connection closed")

func send(c *net.UnixConn, m message, files []*os.File) error {
	m.Version = version
	b, err := json.Marshal(m)
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

// receive reads one message and the descriptors that came with it; a
// message of another protocol version is an error.
func receive(c *net.UnixConn) (message, []*os.File, error) {
	buf := make([]byte, 64<<10)
	oob := make([]byte, syscall.CmsgSpace(4*maxFiles))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	files := filesOf(oob[:oobn])
	var m message
	switch {
	case err != nil:
	case n == 0:
		err = errPeerClosed
	case flags&(syscall.MSG_TRUNC|syscall.MSG_CTRUNC) != 0:
		err = errors.New("hand-over message truncated")
	default:
		if err = json.Unmarshal(buf[:n], &m); err == nil && m.Version != version {
			err = &versionError{m.Version}
		}
	}
	if err != nil {
		closeFiles(files)
		return message{}, nil, err
	}
	return m, files, nil
}

type versionError struct{ v int }

func (e *versionError) Error() string {
	return "the other flannelu speaks hand-over protocol " + strconv.Itoa(e.v) + ", this one " + strconv.Itoa(version)
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
