package loadgen

import (
	"math/bits"
	"sync"
	"time"
)

// histBits sets the histogram's precision: values below 2^histBits µs are
// exact, larger ones fall in buckets 1/2^(histBits-1) of their magnitude wide
// (under 1.6% relative error).
const (
	histBits    = 7
	histHalf    = 1 << (histBits - 1)
	histBuckets = (64-histBits+1)*histHalf + histHalf
)

// histogram is a log-linear latency histogram in microseconds, safe for
// concurrent use. It keeps a fixed ~30 KiB however many samples it sees.
type histogram struct {
	mu     sync.Mutex
	counts [histBuckets]int64
	n      int64
	sum    time.Duration
	max    time.Duration
}

func histIndex(v uint64) int {
	if v < 1<<histBits {
		return int(v)
	}
	shift := bits.Len64(v) - histBits
	return shift*histHalf + int(v>>shift)
}

// histMid is the middle of bucket i's value range.
func histMid(i int) uint64 {
	if i < 1<<histBits {
		return uint64(i)
	}
	shift := i/histHalf - 1
	lo := uint64(i-shift*histHalf) << shift
	return lo + (uint64(1)<<shift)/2
}

func (h *histogram) record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	i := histIndex(uint64(d / time.Microsecond))
	h.mu.Lock()
	h.counts[i]++
	h.n++
	h.sum += d
	h.max = max(h.max, d)
	h.mu.Unlock()
}

// LatencyReport summarizes a histogram in milliseconds.
type LatencyReport struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
}

func (h *histogram) report() LatencyReport {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := LatencyReport{Count: h.n, Max: ms(h.max)}
	if h.n == 0 {
		return r
	}
	r.Mean = ms(h.sum / time.Duration(h.n))
	r.P50 = h.quantile(0.50)
	r.P90 = h.quantile(0.90)
	r.P99 = h.quantile(0.99)
	r.P999 = h.quantile(0.999)
	return r
}

// quantile returns the q-quantile in milliseconds (the middle of the bucket
// holding the sample of rank ceil(q·n), capped at the maximum seen). The
// caller holds mu and n > 0.
func (h *histogram) quantile(q float64) float64 {
	rank := int64(q*float64(h.n) + 0.999999)
	rank = max(1, min(rank, h.n))
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			d := time.Duration(histMid(i)) * time.Microsecond
			return ms(min(d, h.max))
		}
	}
	return ms(h.max)
}

func ms(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}
