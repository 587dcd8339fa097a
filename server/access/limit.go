package access

import (
	"net/netip"
	"sync"
	"time"
)

// DefaultLimiterEntries bounds the addresses a Limiter tracks.
const DefaultLimiterEntries = 16384

// Limiter is a token bucket per source IP (per /64 for IPv6, the smallest
// block one host is usually given, so that one host cannot rotate through
// its addresses to escape the limit): each address may start Burst
// streams at once and Rate per second after that. The map is bounded: when
// it is full, buckets that have refilled (idle addresses) are dropped, and
// if none has, an arbitrary one — an attacker with many addresses can at
// worst reset some buckets, never grow memory.
type Limiter struct {
	rate   float64
	burst  float64
	exempt []netip.Prefix
	max    int
	now    func() time.Time

	mu      sync.Mutex // guards buckets
	buckets map[netip.Addr]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// NewLimiter returns a Limiter; addresses in exempt are never limited.
// A rate <= 0 means no limit (nil Limiter).
func NewLimiter(rate float64, burst int, exempt []netip.Prefix) *Limiter {
	if rate <= 0 {
		return nil
	}
	if burst < 1 {
		burst = 1
	}
	return &Limiter{rate: rate, burst: float64(burst), exempt: exempt, max: DefaultLimiterEntries,
		now: time.Now, buckets: map[netip.Addr]*bucket{}}
}

// Allow takes a token for addr; it reports false when the bucket is empty.
// A nil Limiter allows everything.
func (l *Limiter) Allow(addr netip.Addr) bool {
	if l == nil || !addr.IsValid() {
		return true
	}
	addr = addr.Unmap()
	for _, p := range l.exempt {
		if p.Contains(addr) {
			return true
		}
	}
	if addr.Is6() {
		addr = netip.PrefixFrom(addr, 64).Masked().Addr()
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[addr]
	if !ok {
		if len(l.buckets) >= l.max {
			l.evictLocked(now)
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[addr] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.at).Seconds()*l.rate)
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (l *Limiter) evictLocked(now time.Time) {
	for a, b := range l.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*l.rate >= l.burst {
			delete(l.buckets, a)
		}
	}
	for a := range l.buckets {
		if len(l.buckets) < l.max {
			return
		}
		delete(l.buckets, a)
	}
}

// Len is the number of tracked addresses.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
