package hist

import (
	"sync"
	"testing"
	"time"
)

func TestObserveBuckets(t *testing.T) {
	h := New(0.001, 0.01, 0.1)
	for _, d := range []time.Duration{500 * time.Microsecond, time.Millisecond, 5 * time.Millisecond, 50 * time.Millisecond, time.Second} {
		h.Observe(d)
	}
	s := h.Snapshot()
	want := map[float64]uint64{0.001: 2, 0.01: 3, 0.1: 4}
	for b, n := range want {
		if s.Buckets[b] != n {
			t.Errorf("bucket <= %v: %d, want %d", b, s.Buckets[b], n)
		}
	}
	if s.Count != 5 {
		t.Errorf("count %d, want 5", s.Count)
	}
	if wantSum := 1.0565; s.Sum < wantSum-1e-9 || s.Sum > wantSum+1e-9 {
		t.Errorf("sum %v, want %v", s.Sum, wantSum)
	}
}

func TestNilIgnores(t *testing.T) {
	var h *Histogram
	h.Observe(time.Second)
	if s := h.Snapshot(); s.Count != 0 {
		t.Fatalf("nil histogram counted %d", s.Count)
	}
}

func TestConcurrentObserve(t *testing.T) {
	h := New(1)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				h.Observe(time.Millisecond)
			}
		})
	}
	wg.Wait()
	if s := h.Snapshot(); s.Count != 8000 || s.Buckets[1] != 8000 {
		t.Fatalf("count %d bucket %d, want 8000", s.Count, s.Buckets[1])
	}
}

func TestObserveAllocatesNothing(t *testing.T) {
	h := New(0.001, 0.01)
	if n := testing.AllocsPerRun(100, func() { h.Observe(time.Millisecond) }); n != 0 {
		t.Fatalf("Observe allocates %v per call", n)
	}
}

func TestBoundsMustAscend(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("New accepted descending bounds")
		}
	}()
	New(0.1, 0.01)
}
