package trace

import "time"

// limiter is a token bucket over packet timestamps: rate lines per second
// with bursts of up to burst lines. Using the packets' own times (not the
// writer's clock) makes the decision independent of how late the writer
// goroutine runs, and deterministic under an injected clock.
type limiter struct {
	rate, burst float64 // rate <= 0: unlimited
	tokens      float64
	last        time.Time
	suppressed  uint64 // lines refused since the last allowed one
}

func newLimiter(rate, burst int) limiter {
	return limiter{rate: float64(rate), burst: float64(burst), tokens: float64(burst)}
}

// allow reports whether a line at time now may be written. When it may
// and lines were refused before it, it also returns how many, once.
func (l *limiter) allow(now time.Time) (ok bool, suppressed uint64) {
	if l.rate <= 0 {
		return true, 0
	}
	if !l.last.IsZero() {
		if dt := now.Sub(l.last).Seconds(); dt > 0 {
			l.tokens = min(l.burst, l.tokens+dt*l.rate)
		}
	}
	if now.After(l.last) {
		l.last = now
	}
	if l.tokens < 1 {
		l.suppressed++
		return false, 0
	}
	l.tokens--
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}
