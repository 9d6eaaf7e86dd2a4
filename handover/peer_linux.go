package handover

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// peer is the process at the other end of a connection, as the kernel
// tells it (SO_PEERCRED): the connecting process on the running side, the
// listening one on the successor's.
type peer struct {
	pid int // 0 when it is in a PID namespace this process cannot see
	uid int
}

func peerOf(c *net.UnixConn) (peer, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return peer{}, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) { cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return peer{}, err
	}
	if credErr != nil {
		return peer{}, os.NewSyscallError("getsockopt SO_PEERCRED", credErr)
	}
	return peer{pid: int(cred.Pid), uid: int(cred.Uid)}, nil
}

// errUnseen: the peer's PID is not visible here (another PID namespace, as
// two pods without hostPID), so its network namespace cannot be read.
var errUnseen = errors.New("its process is not visible from here (another PID namespace)")

// check refuses a peer of another user (the descriptors carry the pods'
// traffic) or, where its process is visible, of another network namespace
// (its /proc/<pid>/ns/net against this process's). Over an abstract
// socket, which the kernel scopes to the network namespace, an invisible
// peer is fine; over a socket file it is refused. foreign reports a peer
// that shares nothing with this one: a successor goes on as if nobody ran.
func (p peer) check(abstract bool) (foreign bool, err error) {
	if p.uid != os.Geteuid() {
		return true, fmt.Errorf("the process runs as uid %d, not %d", p.uid, os.Geteuid())
	}
	if p.pid == 0 {
		if abstract {
			return false, nil
		}
		return false, errUnseen
	}
	theirs, err := netnsOf(strconv.Itoa(p.pid))
	if err != nil {
		return false, fmt.Errorf("network namespace of pid %d: %w", p.pid, err)
	}
	ours, err := netnsOf("self")
	if err != nil {
		return false, err
	}
	if theirs != ours {
		return true, fmt.Errorf("pid %d is in another network namespace (%s, this one %s)", p.pid, theirs, ours)
	}
	return false, nil
}

// netns identifies a network namespace: its nsfs inode.
type netns struct{ dev, ino uint64 }

func (n netns) String() string { return "net:[" + strconv.FormatUint(n.ino, 10) + "]" }

func netnsOf(pid string) (netns, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/"+pid+"/ns/net", &st); err != nil {
		return netns{}, &os.PathError{Op: "stat", Path: "/proc/" + pid + "/ns/net", Err: err}
	}
	return netns{uint64(st.Dev), st.Ino}, nil
}
