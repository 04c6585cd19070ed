package records

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"

	"github.com/vrouter/vrouter/router"
)

// randomID returns a random id of the form prefix-<uuid v4>.
func randomID(prefix string) string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%s-%x-%x-%x-%x-%x", prefix, b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// TestVNIHalves: whatever the ids, a PN's VNI and an egress VNI are in
// disjoint halves of the VNI space, so an egress VNI can never take a
// PN's table on a gateway.
func TestVNIHalves(t *testing.T) {
	for range 2000 {
		pn, app := randomID("pn"), randomID("ap")
		if v := VNI(pn); !router.IsNetworkVNI(v) {
			t.Fatalf("VNI(%s) = %#x, not in the PN half", pn, v)
		}
		if v := EgressVNI(app, pn); !router.IsEgressVNI(v) {
			t.Fatalf("EgressVNI(%s, %s) = %#x, not in the egress half", app, pn, v)
		}
	}
}

// collidingPNs finds two network ids with one hash VNI (a birthday search
// over a few thousand random ids).
func collidingPNs(t *testing.T) (string, string) {
	t.Helper()
	seen := make(map[uint32]string)
	for range 1 << 20 {
		id := randomID("pn")
		if other, ok := seen[VNI(id)]; ok && other != id {
			return other, id
		}
		seen[VNI(id)] = id
	}
	t.Fatal("no colliding pair in 2^20 ids")
	return "", ""
}

func TestVNIKeys(t *testing.T) {
	for _, tc := range []struct {
		key string
		vni uint32
		ok  bool
	}{
		{"v/1", 1, true},
		{"v/8388607", 8388607, true},
		{"v/8388608", 0, false}, // the egress half is not claimed
		{"v/0", 0, false},
		{"v/01", 0, false},
		{"v/+1", 0, false},
		{"v/", 0, false},
		{"c/1", 0, false},
		{"v/4294967296", 0, false},
	} {
		v, ok := ParseVNIKey(tc.key)
		if v != tc.vni || ok != tc.ok {
			t.Errorf("ParseVNIKey(%q) = %d, %v; want %d, %v", tc.key, v, ok, tc.vni, tc.ok)
		}
		if ok && VNIKey(v) != tc.key {
			t.Errorf("VNIKey(%d) = %q", v, VNIKey(v))
		}
	}
	pn := randomID("pn")
	seen := map[uint32]bool{}
	for i := range VNICandidates {
		v := VNICandidate(pn, i)
		if !router.IsNetworkVNI(v) {
			t.Errorf("candidate %d = %#x, not in the PN half", i, v)
		}
		seen[v] = true
	}
	if VNICandidate(pn, 0) != VNI(pn) || len(seen) < VNICandidates-1 {
		t.Errorf("candidates: first %d (hash %d), %d distinct", VNICandidate(pn, 0), VNI(pn), len(seen))
	}
}

func FuzzParseVNIKey(f *testing.F) {
	for _, s := range []string{"v/1", "v/8388607", "v/0", "v/01", "v/-1", "v/", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		v, ok := ParseVNIKey(key)
		if ok && (VNIKey(v) != key || !router.IsNetworkVNI(v)) {
			t.Fatalf("ParseVNIKey(%q) = %d, not canonical", key, v)
		}
	})
}

// TestVNIClaims: two networks whose hashes collide get different VNIs,
// claimed one after the other or at the same time on two nodes, and both
// nodes read the same VNI of each from the claims; a second node of a
// network joins its VNI and keeps it after the first leaves; a claim that
// names no network still takes its VNI.
func TestVNIClaims(t *testing.T) {
	a, b := startPair(t)
	sa, sb := a.Store(), b.Store()
	ctx := context.Background()
	settle := a.SettleTime()
	agree := func(pn string, want uint32) {
		t.Helper()
		waitFor(t, "both nodes to read "+pn+"'s VNI", func() bool {
			va, oka := VNIOf(sa, pn)
			vb, okb := VNIOf(sb, pn)
			return oka && okb && va == want && vb == want
		})
	}

	pnA, pnB := collidingPNs(t)
	va, err := ClaimVNI(ctx, sa, pnA, settle)
	if err != nil || va != VNI(pnA) {
		t.Fatalf("ClaimVNI(%s) = %d, %v; want its hash %d", pnA, va, err, VNI(pnA))
	}
	agree(pnA, va)
	vb, err := ClaimVNI(ctx, sb, pnB, settle)
	if err != nil || vb == va || vb != VNICandidate(pnB, 1) {
		t.Fatalf("ClaimVNI(%s) = %d, %v; want its second candidate %d (the first is %s's)", pnB, vb, err, VNICandidate(pnB, 1), pnA)
	}
	agree(pnB, vb)
	if _, ok := sb.Get("node-b", VNIKey(va)); ok {
		t.Errorf("the lost candidate's claim was not withdrawn")
	}

	// A second node of pnA joins its VNI and holds it after the first
	// leaves: another network cannot take it then.
	if v, err := ClaimVNI(ctx, sb, pnA, settle); err != nil || v != va {
		t.Fatalf("joining %s: %d, %v; want %d", pnA, v, err, va)
	}
	ReleaseVNI(sa, va)
	waitFor(t, "node-a's claim gone on node-b", func() bool { _, ok := sb.Get("node-a", VNIKey(va)); return !ok })
	agree(pnA, va)

	// At once, on both nodes.
	pnC, pnD := collidingPNs(t)
	type res struct {
		v   uint32
		err error
	}
	rc, rd := make(chan res, 1), make(chan res, 1)
	go func() { v, err := ClaimVNI(ctx, sa, pnC, settle); rc <- res{v, err} }()
	go func() { v, err := ClaimVNI(ctx, sb, pnD, settle); rd <- res{v, err} }()
	c, d := <-rc, <-rd
	if c.err != nil || d.err != nil || c.v == d.v {
		t.Fatalf("concurrent claims of colliding networks: %d (%v) and %d (%v)", c.v, c.err, d.v, d.err)
	}
	agree(pnC, c.v)
	agree(pnD, d.v)

	// A claim naming no network takes the VNI all the same.
	pnE := randomID("pn")
	sa.Put(VNIKey(VNI(pnE)), []byte("not a network"))
	waitFor(t, "the bogus claim on node-b", func() bool { _, ok := sb.Get("node-a", VNIKey(VNI(pnE))); return ok })
	if v, err := ClaimVNI(ctx, sb, pnE, settle); err != nil || v == VNI(pnE) {
		t.Fatalf("ClaimVNI past a bogus claim: %d, %v", v, err)
	}

	if _, err := ClaimVNI(ctx, sa, "pn-not-an-id", settle); err == nil {
		t.Error("ClaimVNI accepted a bad network id")
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := ClaimVNI(cancelled, sa, randomID("pn"), settle); err == nil {
		t.Error("ClaimVNI with a cancelled context succeeded")
	}
}
