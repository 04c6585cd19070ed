package router

import (
	"testing"
	"time"
)

func TestTokenBucket(t *testing.T) {
	const ms = int64(time.Millisecond)
	type step struct {
		at   int64 // ms
		want bool
	}
	tests := []struct {
		name     string
		interval time.Duration
		burst    int
		steps    []step
	}{
		{"burst then empty", 10 * time.Millisecond, 3, []step{{0, true}, {0, true}, {0, true}, {0, false}, {9, false}}},
		{"refill one token per interval", 10 * time.Millisecond, 2, []step{{0, true}, {0, true}, {0, false}, {10, true}, {10, false}, {19, false}, {20, true}}},
		{"fraction of a token is kept", 10 * time.Millisecond, 2, []step{{0, true}, {0, true}, {15, true}, {20, true}, {29, false}, {30, true}}},
		{"a full bucket caps the fraction", 10 * time.Millisecond, 1, []step{{0, true}, {15, true}, {20, false}, {25, true}}},
		{"idle time credits at most burst", 10 * time.Millisecond, 2, []step{{0, true}, {10_000, true}, {10_000, true}, {10_000, false}}},
		{"full bucket does not bank idle time", 10 * time.Millisecond, 1, []step{{1000, true}, {1000, false}, {1009, false}, {1010, true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newTokenBucket(tt.interval, tt.burst, 0)
			for i, s := range tt.steps {
				if got := b.allow(s.at * ms); got != s.want {
					t.Fatalf("step %d at %d ms: allow = %v, want %v", i, s.at, got, s.want)
				}
			}
		})
	}
}
