// Package e2e runs flannelu clusters in network namespaces: real etcd, real
// flannelu processes, pods behind cni0, traffic between them. Root only.
package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/flannelu/flannelu/testbed"
)

// flannelu is the binary under test, built once by TestMain.
var flannelu string

func TestMain(m *testing.M) {
	// The test binary doubles as the traffic tool run inside pods.
	if mode := os.Getenv("FLANNELU_E2E_HELPER"); mode != "" {
		os.Exit(helperMain(mode, os.Args[len(os.Args)-1]))
	}
	dir, err := os.MkdirTemp("", "flannelu-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	flannelu = filepath.Join(dir, "flannelu")
	build := exec.Command("go", "build", "-o", flannelu, "github.com/flannelu/flannelu/cmd/flannelu")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build flannelu:", err)
		os.Exit(1)
	}
	// Another build under test, to measure a change against it.
	if other := os.Getenv("FLANNELU_E2E_BINARY"); other != "" {
		flannelu = other
	}
	// Each testbed removes its own namespaces (and New sweeps its own
	// name's leftovers); a global sweep here would remove the namespaces
	// of another test process running at the same time.
	// The stale sweep (what killed test processes left) runs here, before
	// any test, and not again (testbed.New sweeps once per process):
	// TestDemoInterrupted kills a demo and needs its leftovers kept for
	// the next demo run to sweep, while other tests build beds.
	testbed.SweepStaleOnce()
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// helperMain is the traffic tool: "recv" accepts one TCP connection on the
// given address and prints the byte count and SHA-256 of what arrived;
// "send N@addr" sends N pseudo-random bytes (a fixed seed) and prints the
// same of what it sent. The handover-* modes are bad hand-over clients
// (successor_test.go).
func helperMain(mode, arg string) int {
	h := sha256.New()
	var n int64
	var err error
	switch mode {
	case "recv":
		var ln net.Listener
		if ln, err = net.Listen("tcp", arg); err == nil {
			fmt.Println("listening")
			var c net.Conn
			if c, err = ln.Accept(); err == nil {
				n, err = io.Copy(h, c)
				c.Close()
			}
		}
	case "send":
		size, addr, _ := strings.Cut(arg, "@")
		var total int64
		total, err = strconv.ParseInt(size, 10, 64)
		var c net.Conn
		if err == nil {
			c, err = net.Dial("tcp", addr)
		}
		if err == nil {
			src := io.LimitReader(rand.NewChaCha8([32]byte{1, 2, 3}), total)
			n, err = io.Copy(io.MultiWriter(c, h), src)
			c.Close()
		}
	case "handover-garbage", "handover-stall", "handover-half":
		return handOverClient(mode, arg)
	default:
		err = fmt.Errorf("unknown helper mode %q", mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	fmt.Printf("bytes=%d sha256=%s\n", n, hex.EncodeToString(h.Sum(nil)))
	return 0
}
