package outage

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestOutageLines(t *testing.T) {
	var log bytes.Buffer
	clock := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	tr := New(Options{What: "etcd", Where: "http://192.0.2.1:2379", Logger: slog.New(slog.NewTextHandler(&log, nil)),
		Now: func() time.Time { return clock }})
	tr.OK() // reachable: nothing to say
	if tr.Err() != nil || tr.Down() || log.Len() != 0 {
		t.Fatalf("healthy tracker: err %v, log %q", tr.Err(), log.String())
	}
	down := errors.New("connection refused")
	for i := 0; i < 150; i++ { // 150 s of failures, one a second, each after a 1 s timeout
		clock = clock.Add(time.Second)
		tr.Fail(clock.Add(-time.Second), down)
	}
	if err := tr.Err(); err == nil || !tr.Down() || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "2m30s") {
		t.Fatalf("Err during the outage = %v, Down %v", err, tr.Down())
	}
	tr.OK()
	tr.OK()
	lines := strings.Split(strings.TrimSpace(log.String()), "\n")
	want := []string{
		`level=WARN msg="etcd unreachable" endpoint=http://192.0.2.1:2379 error="connection refused"`,
		`level=WARN msg="etcd still unreachable" endpoint=http://192.0.2.1:2379 for=1m1s error="connection refused"`,
		`level=WARN msg="etcd still unreachable" endpoint=http://192.0.2.1:2379 for=2m1s error="connection refused"`,
		`level=INFO msg="etcd reachable again" endpoint=http://192.0.2.1:2379 outage=2m30s`,
	}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), log.String())
	}
	for i, l := range lines {
		if !strings.HasSuffix(l, want[i]) {
			t.Errorf("line %d = %q, want ...%q", i, l, want[i])
		}
	}
	if tr.Err() != nil || tr.Down() || tr.Failures() != 150 {
		t.Fatalf("after recovery: Err %v, Down %v, Failures %d (want 150)", tr.Err(), tr.Down(), tr.Failures())
	}
}
