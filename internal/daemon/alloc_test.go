package daemon

import (
	"net/netip"
	"testing"
)

func TestAddrSet(t *testing.T) {
	var s addrSet
	first, ok := s.lowestFree()
	if !ok || first != netip.MustParseAddr("10.240.0.1") {
		t.Fatalf("lowest free of empty set = %v", first)
	}
	if s.take(netip.MustParseAddr("10.240.0.0")) || s.take(netip.MustParseAddr("10.240.3.255")) || s.take(netip.MustParseAddr("10.241.0.1")) {
		t.Fatal("took a non-host address")
	}
	n := 0
	for {
		a, ok := s.lowestFree()
		if !ok {
			break
		}
		if !s.take(a) {
			t.Fatalf("take(%v) failed", a)
		}
		if s.take(a) {
			t.Fatalf("took %v twice", a)
		}
		n++
	}
	if n != 1022 || s.count != 1022 {
		t.Fatalf("allocated %d (count %d), want 1022", n, s.count)
	}
	mid := netip.MustParseAddr("10.240.1.0")
	s.release(mid)
	if a, ok := s.lowestFree(); !ok || a != mid {
		t.Fatalf("after release, lowest free = %v %v, want %v", a, ok, mid)
	}
	s.release(mid) // releasing twice is harmless
	if s.count != 1021 {
		t.Fatalf("count = %d after double release", s.count)
	}
}

func TestLowestFreeNumber(t *testing.T) {
	if n := lowestFreeNumber(map[int]bool{}, nil); n != 1 {
		t.Fatal(n)
	}
	if n := lowestFreeNumber(map[int]bool{1: true, 4: true}, map[int]bool{2: true}); n != 3 {
		t.Fatal(n)
	}
}
