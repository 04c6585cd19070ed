package stats

import (
	"math"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   []float64
		want float64
	}{
		{"odd", []float64{3, 1, 2}, 2},
		{"even", []float64{4, 1, 3, 2}, 2.5},
		{"one", []float64{7}, 7},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in := append([]float64(nil), tt.in...)
			if got := Median(in); got != tt.want {
				t.Errorf("Median(%v) = %v, want %v", tt.in, got, tt.want)
			}
			for i := range in {
				if in[i] != tt.in[i] {
					t.Fatalf("Median reordered its input: %v", in)
				}
			}
		})
	}
	if !math.IsNaN(Median(nil)) {
		t.Error("Median(nil) is not NaN")
	}
}

func TestPercentile(t *testing.T) {
	s := []float64{10, 20, 30, 40, 50, 60, 70, 80, 90, 100}
	for _, tt := range []struct {
		p, want float64
	}{
		{0, 10}, {100, 100}, {50, 55}, {90, 91}, {-5, 10}, {150, 100},
	} {
		if got := Percentile(s, tt.p); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("Percentile(p=%v) = %v, want %v", tt.p, got, tt.want)
		}
	}
	if !math.IsNaN(Percentile(nil, 50)) {
		t.Error("Percentile(nil) is not NaN")
	}
	if got := Percentile([]float64{5}, 99); got != 5 {
		t.Errorf("Percentile of one sample = %v", got)
	}
}

func TestSummarize(t *testing.T) {
	var s []float64
	for i := 1000; i >= 1; i-- {
		s = append(s, float64(i))
	}
	sum := Summarize(s)
	if sum.N != 1000 || sum.Min != 1 || sum.Max != 1000 || sum.Mean != 500.5 {
		t.Errorf("Summarize = %+v", sum)
	}
	if math.Abs(sum.P99-990.01) > 1e-9 || math.Abs(sum.P50-500.5) > 1e-9 {
		t.Errorf("percentiles %+v", sum)
	}
	if (Summarize(nil) != Summary{}) {
		t.Error("Summarize(nil) is not zero")
	}
}

func TestLog2Histogram(t *testing.T) {
	got := Log2Histogram([]float64{0.5, 1, 1.5, 2, 3, 4, 4.1, 100}, 1)
	want := []Bucket{{1, 2}, {2, 2}, {4, 2}, {8, 1}, {16, 0}, {32, 0}, {64, 0}, {128, 1}}
	if len(got) != len(want) {
		t.Fatalf("Log2Histogram = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("bucket %d = %v, want %v", i, got[i], want[i])
		}
	}
	if Log2Histogram(nil, 1) != nil || Log2Histogram([]float64{1}, 0) != nil {
		t.Error("empty input or zero unit should give no buckets")
	}
}
