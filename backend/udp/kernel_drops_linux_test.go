package udp

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flannelu/flannelu/testbed"
)

// metricValue scrapes the rig's registry as /metrics would serve it,
// from the rig's namespace as the daemon runs in its host's, and returns
// the value of the series name (no labels).
func (r *rig) metricValue(name string) (uint64, error) {
	var out bytes.Buffer
	if err := r.ns.Do(func() error { _, err := r.reg.WriteTo(&out); return err }); err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseUint(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("%s is not on /metrics", name)
}

// waitMoved waits until the metric is above zero.
func (r *rig) waitMoved(t *testing.T, name string) {
	t.Helper()
	err := testbed.Eventually(5*time.Second, func() error {
		v, err := r.metricValue(name)
		if err == nil && v == 0 {
			err = fmt.Errorf("%s is still 0", name)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestKernelDropsCounted provokes each loss the kernel counts next to the
// forwarder, with the forwarder not reading (stalled), and sees the
// counter on /metrics move: a pod sending more than the TUN's queue
// holds (500 packets), and a peer sending more than the socket's 4 MiB
// receive buffer holds.
func TestKernelDropsCounted(t *testing.T) {
	t.Run("tun tx queue", func(t *testing.T) {
		r := newRig(t, false)
		if v, err := r.metricValue("flannelu_tun_tx_dropped_packets_total"); err != nil || v != 0 {
			t.Fatalf("before: %d, %v; want 0", v, err)
		}
		for i := 0; i < 2000; i++ {
			unix.Write(r.pod, []byte("burst"))
		}
		r.waitMoved(t, "flannelu_tun_tx_dropped_packets_total")
	})
	t.Run("socket receive buffer", func(t *testing.T) {
		r := newRig(t, false)
		if v, err := r.metricValue("flannelu_udp_socket_dropped_datagrams_total"); err != nil || v != 0 {
			t.Fatalf("before: %d, %v; want 0", v, err)
		}
		inner := innerPacket(t, "198.18.2.5", "198.18.1.7", 1400)
		for i := 0; i < 8000; i++ {
			unix.Write(r.peer, inner)
		}
		r.waitMoved(t, "flannelu_udp_socket_dropped_datagrams_total")
	})
}
