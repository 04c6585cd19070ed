package egress

import (
	"testing"
	"time"
)

// probeRun drives one gateway's probe state through rounds every
// overlayProbeInterval after the grace, the gateway heard in the rounds
// heard says, and returns the verdict after each round.
func probeRun(t *testing.T, heard func(round int) bool, rounds int) []bool {
	t.Helper()
	t0 := time.Unix(1000, 0)
	pr := &overlayProbeState{first: t0, ok: true}
	now := t0.Add(overlayProbeGrace)
	var seen time.Time
	out := make([]bool, rounds)
	for i := range rounds {
		if heard(i) {
			seen = now.Add(-overlayProbeInterval / 2) // an answer to the last round's probe
		}
		pr.ok = pr.round(seen, now)
		out[i] = pr.ok
		now = now.Add(overlayProbeInterval)
	}
	return out
}

// TestOverlayProbeSilence: a gateway heard in every round stays; one that
// goes quiet is silent from the overlayProbeMisses-th round without a
// word, not a round earlier; it takes new flows again only after
// overlayProbeRecover rounds in a row in which it was heard.
func TestOverlayProbeSilence(t *testing.T) {
	const quiet = 10 // the gateway dies after this round
	got := probeRun(t, func(i int) bool { return i <= quiet || i >= quiet+20 }, quiet+30)
	for i, ok := range got {
		var want bool
		switch {
		case i <= quiet:
			want = true
		case i < quiet+overlayProbeMisses:
			want = true // still within the threshold
		case i < quiet+20+overlayProbeRecover-1:
			want = false
		default:
			want = true
		}
		if ok != want {
			t.Fatalf("round %d (gateway quiet from round %d, back at %d): ok=%v, want %v; all: %v", i, quiet+1, quiet+20, ok, want, got)
		}
	}
}

// TestOverlayProbeNoFlap: a gateway that loses answers under load, up to
// overlayProbeMisses-1 rounds in a row, is never failed over; one that
// answers only every other round after it went silent never takes new
// flows back, so neither verdict flaps.
func TestOverlayProbeNoFlap(t *testing.T) {
	lossy := func(i int) bool { return i%overlayProbeMisses == 0 } // misses-1 lost rounds, then one answer
	for i, ok := range probeRun(t, lossy, 20*overlayProbeMisses) {
		if !ok {
			t.Fatalf("round %d: a gateway heard every %d rounds failed over", i, overlayProbeMisses)
		}
	}
	// Dead for long enough, then heard every other round.
	got := probeRun(t, func(i int) bool { return i == 0 || (i > 2*overlayProbeMisses && i%2 == 0) }, 10*overlayProbeMisses)
	for i, ok := range got[overlayProbeMisses:] {
		if ok {
			t.Fatalf("round %d: a gateway heard every other round took new flows back; all: %v", i+overlayProbeMisses, got)
		}
	}
}

// TestOverlayProbeStarvedWorker: rounds that ran late (the worker's probe
// loop starved on a loaded machine) do not count as more rounds than ran:
// one late round with nothing new is a single miss. And rounds that catch
// up back to back after a stall need the time too, not only the count.
func TestOverlayProbeStarvedWorker(t *testing.T) {
	t0 := time.Unix(1000, 0)
	now := t0.Add(overlayProbeGrace)
	pr := &overlayProbeState{first: t0, ok: true}
	pr.ok = pr.round(now.Add(-time.Millisecond), now)
	// A stall of 2 s, then one round: the answer to its probe cannot be
	// there yet.
	now = now.Add(2 * time.Second)
	if pr.ok = pr.round(pr.seen, now); !pr.ok {
		t.Fatal("one late round failed the gateway over")
	}
	// The gateway answered right after; then overlayProbeMisses rounds
	// back to back, 1 ms apart, hear nothing more.
	pr.ok = pr.round(now.Add(time.Millisecond), now.Add(overlayProbeInterval))
	now = now.Add(overlayProbeInterval)
	for i := range overlayProbeMisses {
		now = now.Add(time.Millisecond)
		if pr.ok = pr.round(pr.seen, now); !pr.ok {
			t.Fatalf("round %d, %v after the last answer: failed over before overlayProbeTimeout", i+1, now.Sub(pr.seen))
		}
	}
	now = pr.seen.Add(overlayProbeTimeout)
	if pr.ok = pr.round(pr.seen, now); pr.ok {
		t.Fatalf("still answering after %d rounds and %v of silence", pr.missed, now.Sub(pr.seen))
	}
}

// TestOverlayProbeGrace: a gateway never heard is not failed over during
// the grace of a first WireGuard handshake, and is after it.
func TestOverlayProbeGrace(t *testing.T) {
	t0 := time.Unix(1000, 0)
	pr := &overlayProbeState{first: t0, ok: true}
	var now time.Time
	for now = t0; now.Before(t0.Add(overlayProbeGrace)); now = now.Add(overlayProbeInterval) {
		if pr.ok = pr.round(time.Time{}, now); !pr.ok {
			t.Fatalf("failed over %v into the grace", now.Sub(t0))
		}
	}
	if pr.ok = pr.round(time.Time{}, now); pr.ok {
		t.Fatal("a gateway never heard still takes new flows after the grace")
	}
}
