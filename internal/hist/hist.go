// Package hist is a fixed-bucket histogram of durations that the daemon's
// packages keep beside their other counters and that internal/metrics
// reads at scrape time. Observe is lock-free and allocates nothing, so it
// may sit on any path that already counts things; the packages that
// observe need not depend on a metrics library.
package hist

import (
	"sync/atomic"
	"time"
)

// Histogram counts durations into buckets with upper bounds fixed at New.
// The zero value is not usable; a nil *Histogram ignores observations.
type Histogram struct {
	bounds   []float64       // upper bounds in seconds, ascending
	counts   []atomic.Uint64 // per bucket; the last one is +Inf
	sumNanos atomic.Int64
}

// New returns a histogram with the given upper bounds in seconds, which
// must be ascending (a programming error otherwise: it panics).
func New(bounds ...float64) *Histogram {
	for i := 1; i < len(bounds); i++ {
		if bounds[i] <= bounds[i-1] {
			panic("hist: bounds not ascending")
		}
	}
	return &Histogram{bounds: append([]float64(nil), bounds...), counts: make([]atomic.Uint64, len(bounds)+1)}
}

// Observe adds one duration.
func (h *Histogram) Observe(d time.Duration) {
	if h == nil {
		return
	}
	s := d.Seconds()
	i := 0
	for i < len(h.bounds) && s > h.bounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNanos.Add(int64(d))
}

// Snapshot is a histogram's state in the shape Prometheus wants:
// Buckets[b] is the number of observations <= b (cumulative).
type Snapshot struct {
	Count   uint64
	Sum     float64 // seconds
	Buckets map[float64]uint64
}

// Snapshot reads the counters. Observations that race with it may be in
// Count but not yet in Sum, or the other way round; each is counted once.
func (h *Histogram) Snapshot() Snapshot {
	if h == nil {
		return Snapshot{Buckets: map[float64]uint64{}}
	}
	s := Snapshot{Buckets: make(map[float64]uint64, len(h.bounds))}
	var cum uint64
	for i, b := range h.bounds {
		cum += h.counts[i].Load()
		s.Buckets[b] = cum
	}
	s.Count = cum + h.counts[len(h.bounds)].Load()
	s.Sum = time.Duration(h.sumNanos.Load()).Seconds()
	return s
}
