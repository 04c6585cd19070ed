package router

import "time"

// ICMP errors a port may trigger: a sustained rate and a burst, like the
// kernel's icmp_ratelimit. A container that sprays packets at unknown
// addresses gets a few errors, not one per packet.
const (
	icmpInterval = 10 * time.Millisecond // 100 errors/s sustained
	icmpBurst    = 10
)

// tokenBucket is a rate limiter without allocation or locks: it is owned by
// one port's read goroutine. Times are nanoseconds on a monotonic clock.
type tokenBucket struct {
	interval int64 // nanoseconds per token
	burst    int64
	tokens   int64
	last     int64 // time the token count was last brought up to date
}

func newTokenBucket(interval time.Duration, burst int, now int64) tokenBucket {
	return tokenBucket{interval: int64(interval), burst: int64(burst), tokens: int64(burst), last: now}
}

// allow takes a token if one is available at time now.
func (b *tokenBucket) allow(now int64) bool {
	if b.tokens < b.burst {
		if earned := (now - b.last) / b.interval; earned > 0 {
			b.tokens = min(b.burst, b.tokens+earned)
			// Keep the fraction of a token already earned.
			b.last += earned * b.interval
		}
	}
	if b.tokens == b.burst {
		// A full bucket earns nothing more: restart the clock so the idle
		// time is not credited later.
		b.last = now
	}
	if b.tokens == 0 {
		return false
	}
	b.tokens--
	return true
}
