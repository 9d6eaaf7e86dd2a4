package extension

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flannelu/flannelu/backend"
	"github.com/flannelu/flannelu/subnet"
)

// syncBuffer is a log sink the test reads while Run writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newBackend(t *testing.T, cfg Config) (*Backend, *syncBuffer) {
	t.Helper()
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ext := &backend.ExternalInterface{Iface: &net.Interface{Name: "eth0", MTU: 1500},
		IfaceAddr: netip.MustParseAddr("192.0.2.1"), ExtAddr: netip.MustParseAddr("192.0.2.1")}
	logs := &syncBuffer{}
	b, err := New(ext, Options{Network: netip.MustParsePrefix("198.18.0.0/16"), BackendJSON: raw,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return b, logs
}

func TestPreStartupOutputIsBackendData(t *testing.T) {
	t.Setenv("FLANNELU_TEST_NAME", "node-a")
	b, _ := newBackend(t, Config{PreStartupCommand: `echo "mac $FLANNELU_TEST_NAME"; echo err >&2`})
	attrs, err := b.Init(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// flanneld publishes standard output and error together, trimmed.
	if got, want := string(attrs.BackendData), `"mac node-a\nerr"`; got != want {
		t.Fatalf("BackendData %s, want %s", got, want)
	}
	if attrs.BackendType != BackendType || attrs.PublicIP != netip.MustParseAddr("192.0.2.1") {
		t.Fatalf("attrs %+v", attrs)
	}
	raw, err := subnet.MarshalLeaseAttrs(attrs)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"PublicIP":"192.0.2.1","PublicIPv6":null,"BackendType":"extension","BackendData":"mac node-a\nerr"}`; string(raw) != want {
		t.Fatalf("lease value %s, want %s", raw, want)
	}
}

func TestNoPreStartupCommandPublishesNoData(t *testing.T) {
	b, _ := newBackend(t, Config{})
	attrs, err := b.Init(context.Background())
	if err != nil || attrs.BackendData != nil {
		t.Fatalf("attrs %+v, %v; want no BackendData", attrs, err)
	}
}

func TestFailingStartupCommandStopsTheStart(t *testing.T) {
	b, logs := newBackend(t, Config{PreStartupCommand: "echo broken; exit 3"})
	_, err := b.Init(context.Background())
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "broken") {
		t.Fatalf("Init error %v, want exit status 3 and the output", err)
	}
	if !strings.Contains(logs.String(), "exit_status=3") {
		t.Fatalf("log lacks the exit status:\n%s", logs)
	}
}

func TestPostStartupEnvironment(t *testing.T) {
	out := filepath.Join(t.TempDir(), "env")
	b, _ := newBackend(t, Config{PostStartupCommand: `echo "$NETWORK|$SUBNET|$IPV6SUBNET|$PUBLIC_IP|$PUBLIC_IPV6" > ` + out})
	own := subnet.Lease{Subnet: netip.MustParsePrefix("198.18.5.0/24"), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.1")}}
	if err := b.Start(context.Background(), own); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if want := "198.18.0.0/16|198.18.5.0/24||192.0.2.1|\n"; string(got) != want {
		t.Fatalf("environment %q, want %q", got, want)
	}
}

// A failing peer command is logged with its exit status and output and
// counted; the commands after it still run, in order, with the peer's
// BackendData on standard input.
func TestPeerCommandsRunInOrderAndFailuresAreLogged(t *testing.T) {
	out := filepath.Join(t.TempDir(), "calls")
	b, logs := newBackend(t, Config{
		SubnetAddCommand:    `read DATA; [ "$SUBNET" != 198.18.9.0/24 ] || { echo nope; exit 7; }; echo "add $SUBNET $PUBLIC_IP $DATA" >> ` + out,
		SubnetRemoveCommand: `read DATA; echo "del $SUBNET $DATA" >> ` + out,
	})
	peer := func(sn, pub, data string) subnet.Lease {
		l := subnet.Lease{Subnet: netip.MustParsePrefix(sn), Attrs: subnet.LeaseAttrs{BackendType: BackendType, PublicIP: netip.MustParseAddr(pub)}}
		if data != "" {
			l.Attrs.BackendData = json.RawMessage(data)
		}
		return l
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	b.HandleEvents(ctx, []subnet.Event{
		{Type: subnet.EventAdded, Lease: peer("198.18.9.0/24", "192.0.2.9", `"x"`)},
		{Type: subnet.EventAdded, Lease: peer("198.18.2.0/24", "192.0.2.2", `"mac two"`)},
		{Type: subnet.EventAdded, Lease: subnet.Lease{Subnet: netip.MustParsePrefix("198.18.4.0/24"), Attrs: subnet.LeaseAttrs{BackendType: "vxlan"}}},
		{Type: subnet.EventAdded, Lease: peer("198.18.6.0/24", "192.0.2.6", `{"not":"a string"}`)},
	})
	b.HandleEvents(ctx, []subnet.Event{{Type: subnet.EventRemoved, Lease: peer("198.18.2.0/24", "192.0.2.2", `"mac two"`)}})
	want := "add 198.18.2.0/24 192.0.2.2 mac two\ndel 198.18.2.0/24 mac two\n"
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, _ := os.ReadFile(out)
		if string(got) == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("commands wrote %q, want %q; log:\n%s", got, want, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if f := b.Failures(); f != 2 {
		t.Fatalf("failures %d, want 2 (exit 7, BackendData not a string)", f)
	}
	log := logs.String()
	for _, s := range []string{`msg="SubnetAddCommand failed"`, "exit_status=7", "output=nope", "subnet=198.18.9.0/24", "not a JSON string"} {
		if !strings.Contains(log, s) {
			t.Errorf("log lacks %q:\n%s", s, log)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
