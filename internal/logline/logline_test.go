package logline

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestBoundCutsEveryKindOfValue(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(Bound(slog.NewTextHandler(&buf, nil), 64))
	huge := strings.Repeat("9", 1<<20)
	log.With("ctx", huge).Error("config "+huge, "value", huge, "error", fmt.Errorf("config: Network %q: not an IPv4 CIDR", huge),
		"n", 42, "short", "kept", slog.Group("g", "inner", huge))
	line := buf.String()
	if len(line) > 1024 {
		t.Fatalf("a record with 1 MB values gave a %d-byte line", len(line))
	}
	for _, want := range []string{"n=42", "short=kept", "[cut ", "error=\"config: Network \\\"999", `g.inner="999`} {
		if !strings.Contains(line, want) {
			t.Errorf("line lacks %q:\n%s", want, line)
		}
	}
	if strings.Count(line, "[cut ") != 5 {
		t.Errorf("want 5 cut values (ctx, msg, value, error, g.inner):\n%s", line)
	}
}

func TestBoundLeavesShortValuesAlone(t *testing.T) {
	var plain, bounded bytes.Buffer
	rec := func(l *slog.Logger) {
		l.Info("lease", "subnet", "198.18.4.0/24", "error", errors.New("x"), "n", 3, "ok", true)
	}
	rec(slog.New(slog.NewTextHandler(&plain, &slog.HandlerOptions{ReplaceAttr: dropTime})))
	rec(slog.New(Bound(slog.NewTextHandler(&bounded, &slog.HandlerOptions{ReplaceAttr: dropTime}), 0)))
	if plain.String() != bounded.String() {
		t.Fatalf("short values changed:\n%s\n%s", plain.String(), bounded.String())
	}
}

func dropTime(_ []string, a slog.Attr) slog.Attr {
	if a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

func TestCut(t *testing.T) {
	if got := Cut("héllo", 2); got != "h...[cut 5 bytes]" { // never half a rune
		t.Fatalf("Cut = %q", got)
	}
	if got := Cut("short", 5); got != "short" {
		t.Fatalf("Cut = %q", got)
	}
}
