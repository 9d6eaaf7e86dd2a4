package incumbent

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestMain doubles as a process that only waits to be killed: a stand-in
// for flanneld, run under that name.
func TestMain(m *testing.M) {
	if os.Getenv("INCUMBENT_TEST_WAIT") != "" {
		select {}
	}
	os.Exit(m.Run())
}

// fakeFlanneld runs this test binary, waiting, as flanneld-test with args,
// and returns once the process has that name.
func fakeFlanneld(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "flanneld-test")
	if err := os.Symlink(self, bin); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "INCUMBENT_TEST_WAIT=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() }) //nolint:errcheck // it may have been killed
	// The kernel names the process before it fills in its command line.
	started := func() bool {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/cmdline")
		return isFlanneld(cmd.Process.Pid) && len(b) > 0
	}
	for deadline := time.Now().Add(10 * time.Second); !started(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the stand-in never ran as flanneld-test")
		}
	}
	return cmd
}

func TestFindsAFlanneldProcessOfTheSameSubnetFile(t *testing.T) {
	dir := t.TempDir()
	mine := filepath.Join(dir, "subnet.env")
	same := fakeFlanneld(t, "--subnet-file="+mine)
	fakeFlanneld(t, "--subnet-file", filepath.Join(dir, "other.env"))
	s := Find(context.Background(), Options{SubnetFile: mine})
	if s == nil || len(s.pids) != 1 || s.pids[0] != same.Process.Pid {
		t.Fatalf("sighting %+v, want pid %d alone", s, same.Process.Pid)
	}
	done := make(chan error, 1)
	go func() { done <- s.Wait(context.Background()) }()
	select {
	case err := <-done:
		t.Fatalf("Wait returned while the process runs: %v", err)
	case <-time.After(3 * pollInterval): // a negative: that it has not returned yet
	}
	same.Process.Signal(syscall.SIGTERM) //nolint:errcheck // it runs
	same.Wait()                          //nolint:errcheck // killed
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestWritesReadsFlanneldsFlagForms(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"--subnet-file", "x.env"}, {"-subnet-file=x.env"}, {"--ip-masq", "--subnet-file=x.env"},
	} {
		cmd := fakeFlanneld(t, args...)
		if got, want := writes(cmd.Process.Pid), filepath.Join(wd, "x.env"); got != want {
			t.Errorf("%v in %s: %s, want %s", args, wd, got, want)
		}
	}
	t.Setenv("FLANNELD_SUBNET_FILE", "/run/other/subnet.env")
	if got := writes(fakeFlanneld(t).Process.Pid); got != "/run/other/subnet.env" {
		t.Errorf("FLANNELD_SUBNET_FILE: %s", got)
	}
	t.Setenv("FLANNELD_SUBNET_FILE", "")
	if got := writes(fakeFlanneld(t).Process.Pid); got != defaultSubnetFile {
		t.Errorf("no flag, FLANNELD_SUBNET_FILE empty: %s, want flanneld's default", got)
	}
}

// The health port counts when a listener without SO_REUSEPORT holds it
// and answers /healthz as flanneld; a flannelu's (SO_REUSEPORT) or
// another server's does not.
func TestHealthPortHeldByFlanneld(t *testing.T) {
	for _, c := range []struct {
		name      string
		reusePort bool
		body      string
		want      bool
	}{
		{"flanneld", false, "flanneld is running", true},
		{"another server", false, "ok", false},
		{"flannelu", true, "flanneld is running\n", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			lc := net.ListenConfig{}
			if c.reusePort {
				lc.Control = func(_, _ string, rc syscall.RawConn) error {
					return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, 0xf, 1) }) //nolint:errcheck // SO_REUSEPORT
				}
			}
			ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, c.body) })} //nolint:errcheck // test server
			go srv.Serve(ln)                                                                                                           //nolint:errcheck // closed below
			defer srv.Close()
			s := Find(context.Background(), Options{HealthAddr: ln.Addr().String()})
			if got := s != nil && s.health; got != c.want {
				t.Fatalf("health port seen held by flanneld: %t, want %t (%v)", got, c.want, s)
			}
			if !c.want {
				return
			}
			srv.Close()
			if err := s.Wait(context.Background()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestUDPPortHeldByFlanneld: flanneld's udp socket (no SO_REUSEPORT) is a
// sign that it runs, until it is closed (flanneld closes it last, as it
// exits); flannelu's (SO_REUSEPORT) is not.
func TestUDPPortHeldByFlanneld(t *testing.T) {
	for _, c := range []struct {
		name      string
		reusePort bool
		want      bool
	}{
		{"flanneld", false, true},
		{"flannelu", true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			lc := net.ListenConfig{}
			if c.reusePort {
				lc.Control = func(_, _ string, rc syscall.RawConn) error {
					return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, 0xf, 1) }) //nolint:errcheck // SO_REUSEPORT
				}
			}
			conn, err := lc.ListenPacket(context.Background(), "udp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			s := Find(context.Background(), Options{UDPAddr: conn.LocalAddr().String()})
			if got := s != nil && s.udp; got != c.want {
				t.Fatalf("UDP port seen held by flanneld: %t, want %t (%v)", got, c.want, s)
			}
			if !c.want {
				return
			}
			conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := s.Wait(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}
