package udp

import "time"

// icmpLimiter is a token bucket for the ICMP errors one worker sends, as
// routers limit theirs (RFC 1812 4.3.2.8): a pod that floods an unknown
// subnet gets some answers, not one per packet. It belongs to one
// goroutine and needs no lock.
type icmpLimiter struct {
	tokens float64
	last   time.Time
}

const (
	icmpPerSecond = 1000
	icmpBurst     = 50
)

// allow takes a token if one is left at time now.
func (l *icmpLimiter) allow(now time.Time) bool {
	if l.last.IsZero() {
		l.tokens = icmpBurst
	} else {
		l.tokens = min(icmpBurst, l.tokens+now.Sub(l.last).Seconds()*icmpPerSecond)
	}
	l.last = now
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}
