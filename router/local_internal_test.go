package router

import (
	"testing"
	"time"
)

type countLocal struct{ n int }

func (l *countLocal) Deliver([]byte) { l.n++ }

// TestLocalRateLimit: a port's packets to the Local are cut at the burst,
// then pass at the sustained rate; the cut ones are counted.
func TestLocalRateLimit(t *testing.T) {
	r := New(Config{})
	defer r.Close()
	l := &countLocal{}
	if err := r.SetLocal(1, testPN(1), l, LocalOptions{}); err != nil {
		t.Fatal(err)
	}
	const batch = 128
	a := attachNoLoop(t, r, newFakePort(batch, false), 1, "10.240.0.1", 1390)
	q := UDP4("10.240.0.1", "169.254.20.10")
	pkts := make([][]byte, batch)
	for i := range pkts {
		pkts[i] = q
	}
	now := r.now()
	for range 40 { // 5120 packets at one instant
		a.forward(load(a, pkts...), now)
	}
	if l.n != localBurst {
		t.Fatalf("%d packets reached the Local at one instant, want the burst %d", l.n, localBurst)
	}
	// One millisecond later: 50 more tokens.
	now += int64(time.Millisecond)
	a.forward(load(a, pkts...), now)
	if want := localBurst + int(time.Millisecond/localInterval); l.n != want {
		t.Fatalf("after 1 ms: %d through, want %d", l.n, want)
	}
	s := r.Stats()
	if s.Counters["to_stack"] != uint64(l.n) || s.Drops["stack_rate_limited"] != uint64(41*batch-l.n) {
		t.Fatalf("to_stack %d, stack_rate_limited %d; want %d and %d", s.Counters["to_stack"], s.Drops["stack_rate_limited"], l.n, 41*batch-l.n)
	}
}
