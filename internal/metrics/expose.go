package metrics

import (
	"io"
	"net/http"
	"strconv"
	"strings"
)

// ContentType is the Prometheus text exposition format, version 0.0.4.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// ServeHTTP answers a scrape with every family (WriteTo).
func (r *Registry) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", ContentType)
	r.WriteTo(w) //nolint:errcheck // the scraper went away
}

// WriteTo writes every family in the Prometheus text format: families
// sorted by name, each with its HELP and TYPE lines, then its series
// sorted by label values. A family without series is left out. Values are
// read one by one, not as an atomic snapshot. The text is rendered into a
// reused buffer under the registry's lock and written to w after it is
// released, so a slow scraper never holds up a registration.
func (r *Registry) WriteTo(w io.Writer) (int64, error) {
	if r == nil {
		return 0, nil
	}
	bp, _ := r.bufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	buf := r.render((*bp)[:0])
	n, err := w.Write(buf)
	*bp = buf
	r.bufs.Put(bp)
	return int64(n), err
}

func (r *Registry) render(buf []byte) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range r.families {
		buf = f.render(buf)
	}
	return buf
}

func (f *family) render(buf []byte) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.series) == 0 {
		return buf
	}
	buf = append(buf, "# HELP "...)
	buf = append(buf, f.name...)
	buf = append(buf, ' ')
	buf = appendEscaped(buf, f.help, false)
	buf = append(buf, "\n# TYPE "...)
	buf = append(buf, f.name...)
	buf = append(buf, ' ')
	buf = append(buf, f.kind.String()...)
	buf = append(buf, '\n')
	for _, s := range f.series {
		buf = append(buf, s.prefix...)
		buf = s.appendValue(buf)
		buf = append(buf, '\n')
	}
	return buf
}

func (s *series) appendValue(buf []byte) []byte {
	switch {
	case s.counter != nil:
		return strconv.AppendUint(buf, s.counter.Value(), 10)
	case s.countFn != nil:
		return strconv.AppendUint(buf, s.countFn(), 10)
	case s.gauge != nil:
		return appendFloat(buf, s.gauge.Value())
	default:
		return appendFloat(buf, s.gaugeFn())
	}
}

// appendFloat writes v with the shortest digits that read back as v; Go
// spells the special values "+Inf", "-Inf" and "NaN" as the format does.
func appendFloat(buf []byte, v float64) []byte {
	return strconv.AppendFloat(buf, v, 'g', -1, 64)
}

// appendSeriesName renders `name{label="value",...} `, or `name ` without
// labels.
func appendSeriesName(buf []byte, name string, labels, values []string) []byte {
	buf = append(buf, name...)
	for i, l := range labels {
		if i == 0 {
			buf = append(buf, '{')
		} else {
			buf = append(buf, ',')
		}
		buf = append(buf, l...)
		buf = append(buf, `="`...)
		buf = appendEscaped(buf, values[i], true)
		buf = append(buf, '"')
	}
	if len(labels) > 0 {
		buf = append(buf, '}')
	}
	return append(buf, ' ')
}

// appendEscaped escapes s as the text format requires: backslash and
// newline in HELP text, and also the double quote in label values.
func appendEscaped(buf []byte, s string, quote bool) []byte {
	if !strings.ContainsAny(s, "\\\n\"") {
		return append(buf, s...)
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			buf = append(buf, `\\`...)
		case c == '\n':
			buf = append(buf, `\n`...)
		case c == '"' && quote:
			buf = append(buf, `\"`...)
		default:
			buf = append(buf, c)
		}
	}
	return buf
}
