package handover

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Addr is where the running flannelu listens for its successor.
//
// The default is an abstract Unix socket ("@flannelu" and the subnet
// file's path): the kernel keeps abstract names per network namespace, so
// two namespace hosts sharing a directory (a test rig, or /run/flannel
// mounted into both) never reach each other's; there is no file that a
// symlink could replace, that another process could have created first,
// or that a crash leaves behind; and two pods on the host network (a
// DaemonSet's old and new pod) share it without a shared mount. Two
// networks on one host have two subnet files, so two names.
//
// A path (--handover-socket=/some/file) is a socket file, created fresh by
// its owner: whatever is found there is never followed (a symlink is
// removed, not connected to), a socket is removed only when nothing
// listens on it, and the file is removed on close only while it is still
// the one this process bound.
type Addr struct {
	Name     string // the path, or the abstract name without its "@"
	Abstract bool
}

// maxName is the longest socket name (sun_path less its terminating or, for
// an abstract name, leading NUL).
const maxName = 107

// AddrFor reads --handover-socket: "none" (ok false), "@name" (abstract),
// a path, or "" for the default, derived from the subnet file.
func AddrFor(flag, subnetFile string) (a Addr, ok bool) {
	switch {
	case flag == "none":
		return Addr{}, false
	case strings.HasPrefix(flag, "@"):
		return Addr{Name: flag[1:], Abstract: true}, true
	case flag != "":
		return Addr{Name: flag}, true
	}
	if abs, err := filepath.Abs(subnetFile); err == nil {
		subnetFile = abs
	}
	name := "flannelu" + subnetFile
	if len(name) > maxName {
		sum := sha256.Sum256([]byte(subnetFile))
		name = "flannelu-" + hex.EncodeToString(sum[:16])
	}
	return Addr{Name: name, Abstract: true}, true
}

func (a Addr) String() string {
	if a.Abstract {
		return "@" + a.Name
	}
	return a.Name
}

func (a Addr) unix() *net.UnixAddr { return &net.UnixAddr{Name: a.String(), Net: "unixpacket"} }

// errNotFollowed: a symlink or another kind of file where the socket file
// should be; it is not connected to.
var errNotFollowed = errors.New("not a socket")

// dial connects to a listener on a; nil, nil when nobody listens there.
func (a Addr) dial(ctx context.Context) (*net.UnixConn, error) {
	if !a.Abstract {
		switch fi, err := os.Lstat(a.Name); {
		case errors.Is(err, fs.ErrNotExist):
			return nil, nil
		case err != nil:
			return nil, err
		case fi.Mode()&fs.ModeSocket == 0:
			return nil, fmt.Errorf("%s is a %s: %w", a.Name, kindOf(fi.Mode()), errNotFollowed)
		}
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unixpacket", a.String())
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
		return nil, nil // nobody runs, or a crashed process left its socket file
	}
	if err != nil {
		return nil, err
	}
	return c.(*net.UnixConn), nil
}

// listener is a's listening socket; close removes a socket file only while
// it is still the one bound here.
type listener struct {
	*net.UnixListener
	addr Addr
	ino  uint64
}

// listen binds a fresh socket on a. A socket file is created mode 0600
// (fchmod before bind: a chmod after it would follow whatever replaced
// the file meanwhile).
func (a Addr) listen(ctx context.Context, log *slog.Logger) (*listener, error) {
	if !a.Abstract {
		if err := clearPath(ctx, a, log); err != nil {
			return nil, err
		}
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		if cerr := rc.Control(func(fd uintptr) { err = unix.Fchmod(int(fd), 0o600) }); cerr != nil {
			return cerr
		}
		return os.NewSyscallError("fchmod", err)
	}}
	ln, err := lc.Listen(ctx, "unixpacket", a.String())
	if err != nil {
		return nil, err
	}
	l := &listener{UnixListener: ln.(*net.UnixListener), addr: a}
	if !a.Abstract {
		l.SetUnlinkOnClose(false)
		var st unix.Stat_t
		if err := unix.Lstat(a.Name, &st); err == nil {
			l.ino = st.Ino
		}
	}
	return l, nil
}

// Close closes the listener and removes its socket file if it is still
// this listener's.
func (l *listener) Close() error {
	err := l.UnixListener.Close()
	if !l.addr.Abstract && l.ino != 0 {
		var st unix.Stat_t
		if unix.Lstat(l.addr.Name, &st) == nil && st.Ino == l.ino && st.Mode&unix.S_IFMT == unix.S_IFSOCK {
			os.Remove(l.addr.Name)
		}
	}
	return err
}

// clearPath makes way for a fresh socket file: a symlink (never followed)
// or a socket nobody listens on (a crashed process's) is removed; a live
// socket or any other file is left alone, and is an error.
func clearPath(ctx context.Context, a Addr, log *slog.Logger) error {
	if err := os.MkdirAll(filepath.Dir(a.Name), 0o755); err != nil {
		return err
	}
	fi, err := os.Lstat(a.Name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case fi.Mode()&fs.ModeSymlink != 0:
		log.Warn("removing a symlink at the hand-over socket path (it is never followed)", "path", a.Name)
		return os.Remove(a.Name)
	case fi.Mode()&fs.ModeSocket == 0:
		return fmt.Errorf("%s exists and is a %s, not a socket: not touching it", a.Name, kindOf(fi.Mode()))
	}
	c, err := a.dial(ctx)
	if c != nil {
		c.Close()
		return fmt.Errorf("another process listens on %s", a.Name)
	}
	if err != nil {
		return err
	}
	return os.Remove(a.Name)
}

func kindOf(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m.IsDir():
		return "directory"
	case m.IsRegular():
		return "regular file"
	}
	return "special file"
}
