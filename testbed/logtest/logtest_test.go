package logtest

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestCountsDerivedLoggersAndWaits(t *testing.T) {
	var out bytes.Buffer
	logger, log := New(&out)
	derived := logger.With("backend", "x").WithGroup("g")
	if Of(derived) != log {
		t.Fatal("Of(derived logger) is not the Log New returned")
	}
	if Of(slog.Default()) != nil {
		t.Fatal("Of(a foreign logger) != nil")
	}
	go func() {
		for i := 0; i < 3; i++ {
			derived.Debug("tick", "i", i)
		}
	}()
	if err := log.Wait("tick", 3, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), "msg=tick"); n != 3 {
		t.Fatalf("%d lines written, want 3 (debug level included):\n%s", n, out.String())
	}
	err := log.Wait("tock", 1, 10*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), `"tock" logged 0 times`) {
		t.Fatalf("Wait for a message never logged = %v", err)
	}
}
