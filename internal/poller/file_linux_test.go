package poller

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// NewFile keeps a non-blocking descriptor non-blocking and off Go's
// netpoller (no epoll instance of the process watches it), where
// os.NewFile registers it.
func TestNewFileStaysOffTheNetpoller(t *testing.T) {
	r, w, err := os.Pipe() // makes sure the netpoller's epoll instance exists
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if !watched(t, int(r.Fd())) {
		t.Fatal("the test cannot see the netpoller: an os.Pipe end is not watched")
	}
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	f, err := NewFile(fd, "eventfd")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	raw, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	raw.Control(func(fd uintptr) { //nolint:errcheck // f is open
		flags, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
		if err != nil || flags&unix.O_NONBLOCK == 0 {
			t.Errorf("flags %#x, %v: want O_NONBLOCK kept", flags, err)
		}
		if watched(t, int(fd)) {
			t.Error("NewFile's descriptor is watched by an epoll instance of the process (Go's netpoller)")
		}
	})
}

// watched reports whether an epoll instance of this process watches fd
// (a "tfd:" line of its /proc fdinfo).
func watched(t *testing.T, fd int) bool {
	t.Helper()
	links, err := filepath.Glob("/proc/self/fd/*")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if target, _ := os.Readlink(l); target != "anon_inode:[eventpoll]" {
			continue
		}
		info, err := os.Open("/proc/self/fdinfo/" + filepath.Base(l))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(info)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), fmt.Sprintf("tfd: %8d ", fd)) {
				info.Close()
				return true
			}
		}
		info.Close()
	}
	return false
}
