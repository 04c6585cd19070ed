package records

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"testing"
	"time"
)

// collidingNames finds two node names with one hash overlay address.
func collidingNames(t *testing.T) (string, string) {
	t.Helper()
	seen := make(map[netip.Addr]string)
	for range 1 << 20 {
		var b [6]byte
		rand.Read(b[:])
		name := "node-" + hex.EncodeToString(b[:])
		if other, ok := seen[OverlayAddr(name)]; ok && other != name {
			return other, name
		}
		seen[OverlayAddr(name)] = name
	}
	t.Fatal("no colliding names in 2^20")
	return "", ""
}

func TestOverlayKeys(t *testing.T) {
	for _, tc := range []struct {
		key string
		ok  bool
	}{
		{"o/100.64.0.1", true},
		{"o/100.127.255.254", true},
		{"o/10.240.0.1", false}, // outside the overlay prefix
		{"o/100.064.0.1", false},
		{"o/", false},
		{"v/100.64.0.1", false},
	} {
		a, ok := ParseOverlayKey(tc.key)
		if ok != tc.ok || (ok && OverlayKey(a) != tc.key) {
			t.Errorf("ParseOverlayKey(%q) = %v, %v", tc.key, a, ok)
		}
	}
	for i := range OverlayCandidates {
		if a := OverlayCandidate("n1", i); !OverlayPrefix.Contains(a) {
			t.Errorf("candidate %d = %v, outside %v", i, a, OverlayPrefix)
		}
	}
}

func FuzzParseOverlayKey(f *testing.F) {
	for _, s := range []string{"o/100.64.0.1", "o/::1", "o/", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if a, ok := ParseOverlayKey(key); ok && (OverlayKey(a) != key || !OverlayPrefix.Contains(a)) {
			t.Fatalf("ParseOverlayKey(%q) = %v", key, a)
		}
	})
}

// TestOverlayClaims: two nodes whose names hash to one overlay address;
// the one that claims second moves to another address, and both read the
// same holder of each address from the claims. A claim whose value is not
// its owner holds nothing.
func TestOverlayClaims(t *testing.T) {
	n1, n2 := collidingNames(t)
	a, b := startNode(t, n1), startNode(t, n2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Join(ctx, []string{a.LocalAddr().String()}); err != nil {
		t.Fatal(err)
	}
	sa, sb := a.Store(), b.Store()
	shared := OverlayAddr(n1)
	if got, moved := ClaimOverlay(sa, n1, shared); moved || got != shared {
		t.Fatalf("first claim: %v, moved %v", got, moved)
	}
	waitFor(t, "n2 to see n1's claim", func() bool { h, ok := OverlayHolder(sb, shared); return ok && h == n1 })
	got, moved := ClaimOverlay(sb, n2, shared)
	if !moved || got == shared || !OverlayPrefix.Contains(got) {
		t.Fatalf("second claim of %v: %v, moved %v", shared, got, moved)
	}
	if _, ok := sb.Get(n2, OverlayKey(shared)); ok {
		t.Error("the lost claim was not withdrawn")
	}
	waitFor(t, "both nodes to agree on the holders", func() bool {
		h1, ok1 := OverlayHolder(sa, got)
		h2, ok2 := OverlayHolder(sa, shared)
		h3, ok3 := OverlayHolder(sb, shared)
		return ok1 && ok2 && ok3 && h1 == n2 && h2 == n1 && h3 == n1
	})
	// Kept on the next round.
	if again, moved := ClaimOverlay(sb, n2, got); moved || again != got {
		t.Fatalf("a held claim moved: %v", again)
	}
	// A claim naming another node holds nothing.
	bogus := OverlayCandidate(n1, 5)
	sa.Put(OverlayKey(bogus), []byte(n2))
	if _, ok := OverlayHolder(sa, bogus); ok {
		t.Error("a claim naming another node holds the address")
	}
}
