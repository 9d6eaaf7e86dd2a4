// Package logline bounds the size of the daemon's log lines: every message
// and attribute value longer than a limit is cut, with a marker saying how
// much was cut. Values come from etcd and the Kubernetes API, which anyone
// with write access fills; a 1 MB network config logged in full once a
// second would be 1 MB/s of log.
package logline

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"unicode/utf8"
)

// DefaultMax is the longest message or attribute value kept whole, in
// bytes: longer than any config, lease or error flannelu logs normally.
const DefaultMax = 512

// Bound returns a handler that passes records to h with every message and
// attribute value (strings, errors, anything formatted) cut to max bytes.
func Bound(h slog.Handler, max int) slog.Handler {
	if max <= 0 {
		max = DefaultMax
	}
	return &bounded{h: h, max: max}
}

type bounded struct {
	h   slog.Handler
	max int
}

func (b *bounded) Enabled(ctx context.Context, l slog.Level) bool { return b.h.Enabled(ctx, l) }

func (b *bounded) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, Cut(r.Message, b.max), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(b.attr(a))
		return true
	})
	return b.h.Handle(ctx, out)
}

func (b *bounded) WithAttrs(attrs []slog.Attr) slog.Handler {
	cut := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		cut[i] = b.attr(a)
	}
	return &bounded{h: b.h.WithAttrs(cut), max: b.max}
}

func (b *bounded) WithGroup(name string) slog.Handler {
	return &bounded{h: b.h.WithGroup(name), max: b.max}
}

// attr cuts one attribute. A value of another kind than string is
// formatted here only to measure it; when short it is passed on as it
// was, so the handler renders it as usual.
func (b *bounded) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		if s := v.String(); len(s) > b.max {
			return slog.String(a.Key, Cut(s, b.max))
		}
	case slog.KindGroup:
		group := v.Group()
		cut := make([]any, len(group))
		for i, g := range group {
			cut[i] = b.attr(g)
		}
		return slog.Group(a.Key, cut...)
	case slog.KindAny:
		if s := fmt.Sprint(v.Any()); len(s) > b.max {
			return slog.String(a.Key, Cut(s, b.max))
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}

// Cut returns s when it is at most max bytes long, else its first max
// bytes (backed off to a UTF-8 boundary) and a marker such as
// "...[cut 1048064 bytes]".
func Cut(s string, max int) string {
	if len(s) <= max {
		return s
	}
	n := max
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "...[cut " + strconv.Itoa(len(s)-n) + " bytes]"
}
