package wireguard

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// inNamespaceEnv marks the test binary re-run in namespaces of its own.
const inNamespaceEnv = "FLANNELU_WIREGUARD_TEST_NS"

// TestMain runs the package's tests, as root, in a network namespace and a
// mount namespace of their own with a tmpfs on /run/wireguard: the
// devices, ports and UAPI sockets they make are seen by nothing else on
// the machine (other tests' hosts included), and every goroutine
// wireguard-go starts (it opens sockets and reads links from its own
// goroutines) is in that namespace. Without root the tests that need it
// skip (testbed.RequireRoot).
func TestMain(m *testing.M) {
	if os.Geteuid() == 0 && os.Getenv(inNamespaceEnv) == "" {
		os.Exit(inNamespaces())
	}
	os.Exit(m.Run())
}

func inNamespaces() int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	args := append([]string{"--net", "--mount", "--propagation", "private", "--", "sh", "-c",
		`ip link set lo up && mkdir -p /run/wireguard && mount -t tmpfs tmpfs /run/wireguard && exec "$@"`, "sh", self}, os.Args[1:]...)
	cmd := exec.Command("unshare", args...)
	cmd.Env = append(os.Environ(), inNamespaceEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err = cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "run the tests in namespaces of their own:", err)
		return 1
	}
	return 0
}
