// Package stats holds the small amount of statistics the bench suite
// reports: medians of repeated runs and percentiles of latency samples.
package stats

import (
	"math"
	"slices"
)

// Median returns the median of xs (the mean of the two middle values for an
// even count), or NaN for none. xs is not modified.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Percentile returns the p-th percentile (0 ≤ p ≤ 100) of sorted, by linear
// interpolation between the closest ranks (the method of numpy's default
// and of most load generators), or NaN when sorted is empty.
func Percentile(sorted []float64, p float64) float64 {
	n := len(sorted)
	switch {
	case n == 0 || math.IsNaN(p):
		return math.NaN()
	case p <= 0:
		return sorted[0]
	case p >= 100:
		return sorted[n-1]
	}
	rank := p / 100 * float64(n-1)
	lo := int(math.Floor(rank))
	hi := min(lo+1, n-1)
	frac := rank - float64(lo)
	return sorted[lo] + frac*(sorted[hi]-sorted[lo])
}

// Summary describes a set of samples.
type Summary struct {
	N    int     `json:"n"`
	Min  float64 `json:"min"`
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
}

// Summarize sorts samples in place and describes them. With no samples
// every figure is 0 (JSON has no NaN).
func Summarize(samples []float64) Summary {
	if len(samples) == 0 {
		return Summary{}
	}
	slices.Sort(samples)
	sum := 0.0
	for _, x := range samples {
		sum += x
	}
	return Summary{
		N:    len(samples),
		Min:  samples[0],
		Mean: sum / float64(len(samples)),
		P50:  Percentile(samples, 50),
		P90:  Percentile(samples, 90),
		P99:  Percentile(samples, 99),
		P999: Percentile(samples, 99.9),
		Max:  samples[len(samples)-1],
	}
}

// Bucket is one bar of a histogram: Count samples in (previous UpTo, UpTo].
type Bucket struct {
	UpTo  float64 `json:"up_to"`
	Count uint64  `json:"count"`
}

// Log2Histogram counts samples in power-of-two buckets starting at unit:
// (0, unit], (unit, 2·unit], (2·unit, 4·unit], … Empty buckets above the
// largest sample are left out; unit must be positive.
func Log2Histogram(samples []float64, unit float64) []Bucket {
	if len(samples) == 0 || !(unit > 0) {
		return nil
	}
	var counts []uint64
	for _, x := range samples {
		i := 0
		if x > unit {
			i = int(math.Ceil(math.Log2(x / unit)))
			// Guard the float rounding at exact powers of two.
			if unit*math.Exp2(float64(i-1)) >= x {
				i--
			}
		}
		for len(counts) <= i {
			counts = append(counts, 0)
		}
		counts[i]++
	}
	out := make([]Bucket, len(counts))
	for i, c := range counts {
		out[i] = Bucket{UpTo: unit * math.Exp2(float64(i)), Count: c}
	}
	return out
}
