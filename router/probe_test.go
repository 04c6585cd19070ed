package router

import (
	"net/netip"
	"testing"
	"time"
)

// TestOverlayTrafficIsHeard: any frame from a probed node over the
// overlay counts as hearing from it, so that under load, when probes and
// their answers find the overlay queue full, the traffic itself keeps the
// gateway alive. Nodes never probed are not tracked.
func TestOverlayTrafficIsHeard(t *testing.T) {
	b := newOverlayNode(t, testNodeB)
	dst := newFakePort(8, true)
	attachNoLoop(t, b.r, dst, 7, "10.240.0.2", 1390)
	b.setRemote(t, 7, "10.240.0.1", testNodeA)
	a := netip.AddrFrom4(testNodeA)
	frame := func() []byte { return overlayFrame(UDP4("10.240.0.1", "10.240.0.2"), 7, testNodeA, testNodeB) }

	b.o.Write([][]byte{frame()}, wgOffset)
	if !b.r.OverlaySeen(a).IsZero() {
		t.Fatal("a node never probed is tracked")
	}
	b.r.ProbeOverlay([]netip.Addr{a}) // the probe waits in the queue, unanswered
	if !b.r.OverlaySeen(a).IsZero() {
		t.Fatal("heard before anything came from it")
	}
	writes := len(dst.writes)
	start := time.Now()
	// A frame dropped after decryption still proves the node's session:
	// here one to an unknown destination.
	b.o.Write([][]byte{frame(), overlayFrame(UDP4("10.240.0.1", "10.240.0.9"), 7, testNodeA, testNodeB)}, wgOffset)
	seen := b.r.OverlaySeen(a)
	if seen.Before(start) || seen.After(time.Now()) {
		t.Fatalf("heard at %v, traffic sent at %v", seen, start)
	}
	if len(dst.writes) != writes+1 {
		t.Fatalf("%d writes, want 1", len(dst.writes)-writes)
	}
	if s := b.r.Stats(); s.Counters["probe_replies"] != 0 {
		t.Fatalf("traffic counted as probe replies: %v", s.Counters)
	}
	// A frame to another node's address is not from a session with us.
	time.Sleep(time.Millisecond)
	b.o.Write([][]byte{overlayFrame(UDP4("10.240.0.1", "10.240.0.2"), 7, testNodeA, [4]byte{100, 64, 9, 9})}, wgOffset)
	if got := b.r.OverlaySeen(a); got != seen {
		t.Fatalf("a malformed frame moved the last heard from %v to %v", seen, got)
	}
}
