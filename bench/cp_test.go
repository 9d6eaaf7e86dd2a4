//go:build linux

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAuditCount reads an API server audit log as it grows (a partial
// last line is left for the next read) and counts one address's requests
// in a window, by verb and subresource.
func TestAuditCount(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	line := func(ip, verb, sub, at string) string {
		return `{"kind":"Event","verb":"` + verb + `","sourceIPs":["` + ip + `"],"objectRef":{"resource":"nodes","subresource":"` + sub +
			`"},"requestReceivedTimestamp":"` + at + `"}` + "\n"
	}
	log := line("192.0.2.2", "list", "", "2026-12-07T10:00:00.5Z") + line("192.0.2.2", "watch", "", "2026-12-07T10:00:01Z") +
		line("192.0.2.3", "list", "", "2026-12-07T10:00:01Z") + line("192.0.2.2", "patch", "status", "2026-12-07T10:00:02Z") +
		line("192.0.2.2", "patch", "status", "2026-12-07T10:00:09Z")
	cut := len(log) - 20
	if err := os.WriteFile(path, []byte(log[:cut]), 0o644); err != nil {
		t.Fatal(err)
	}
	a := &auditLog{path: path}
	from, _ := time.Parse(time.RFC3339, "2026-12-07T10:00:00Z")
	to := from.Add(5 * time.Second)
	if got := a.count("192.0.2.2", from, to); total(got) != 3 || got["patch nodes/status"] != 1 {
		t.Fatalf("first read: %v", got)
	}
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := a.count("192.0.2.2", from, to.Add(10*time.Second)); total(got) != 4 || got["patch nodes/status"] != 2 || got["list"] != 1 {
		t.Fatalf("after the rest was written: %v", got)
	}
}

// TestControlPlaneFlags: the control-plane measure runs alone, and its
// own flags are checked before anything starts.
func TestControlPlaneFlags(t *testing.T) {
	if _, err := parseFlags([]string{"-measure", controlPlane + ",latency"}); err == nil || !strings.Contains(err.Error(), "runs alone") {
		t.Errorf("control-plane with latency: %v", err)
	}
	for _, bad := range [][]string{{"-backends", "wireguard"}, {"-nodes", "9000"}, {"-steady", "1h"}, {"-stores", ""}} {
		cfg, err := parseFlags(append([]string{"-measure", controlPlane}, bad...))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cfg.cp.config(cfg); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
