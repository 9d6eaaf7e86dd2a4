package daemon

import (
	"bytes"
	"flag"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
)

func optionFlags(opts []backendOption) []string {
	var flags []string
	for _, o := range opts {
		flags = append(flags, o.flag)
	}
	return flags
}

// Options that do nothing with the network config's backend are named,
// whether set on the command line or through FLANNELD_*; defaults and
// options of the backend in use are not.
func TestUnusedOptions(t *testing.T) {
	o, err := ParseOptions([]string{"--trace", "--trace-pcap", "/tmp/x.pcap", "--udp-workers", "2", "--reconcile-interval", "5s"},
		envOf(map[string]string{"FLANNELD_UDP_OFFLOAD": "false"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for backend, want := range map[string][]string{
		"vxlan":   {"trace", "trace-pcap", "udp-workers", "udp-offload"},
		"host-gw": {"trace", "trace-pcap", "udp-workers", "udp-offload"},
		"udp":     {"reconcile-interval"},
		"ipip":    {"udp-workers"}, // its userspace path runs one worker
	} {
		if got := optionFlags(unusedOptions(o, backend)); !slices.Equal(got, want) {
			t.Errorf("%s: unused %v, want %v", backend, got, want)
		}
	}
	defaults, _ := ParseOptions(nil, envOf(nil), io.Discard)
	for _, backend := range []string{"udp", "vxlan", "host-gw", "ipip"} {
		if got := unusedOptions(defaults, backend); len(got) != 0 {
			t.Errorf("%s with default options: unused %v", backend, optionFlags(got))
		}
	}
	var log bytes.Buffer
	warnUnusedOptions(o, "vxlan", slog.New(slog.NewTextHandler(&log, nil)))
	if want := `level=WARN msg="option ignored: the network config's backend does not use it" option=--trace backend=vxlan used_by="[udp ipip]"`; !strings.Contains(log.String(), want) {
		t.Fatalf("log:\n%s\nwant a line with %s", log.String(), want)
	}
	if n := strings.Count(log.String(), "\n"); n != 4 {
		t.Fatalf("%d warnings, want 4:\n%s", n, log.String())
	}
}

// Every option of the udp backend (named udp-* or trace*) is in
// backendOptions, so a new one cannot be forgotten there.
func TestBackendOptionsComplete(t *testing.T) {
	known := optionFlags(backendOptions)
	newFlagSet(&Options{}, io.Discard).VisitAll(func(f *flag.Flag) {
		if (strings.HasPrefix(f.Name, "udp-") || strings.HasPrefix(f.Name, "trace")) && !slices.Contains(known, f.Name) {
			t.Errorf("--%s is not in backendOptions", f.Name)
		}
	})
}
