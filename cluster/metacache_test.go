package cluster

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"testing"
)

func TestMetaCache(t *testing.T) {
	sg := testSigner("n1")
	m := fullMeta(2)
	b, err := signMeta("n1", &m, sg)
	if err != nil {
		t.Fatal(err)
	}
	mc := newMetaCache()
	want, err := verifyMeta("n1", b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		got, err := mc.verify("n1", b)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("verify %d: %+v, %v; want %+v", i, got, err, want)
		}
		if len(got.EgressIPs) > 0 {
			// A caller's copy is its own.
			got.EgressIPs[0] = netip.MustParseAddr("192.0.2.99")
		}
	}
	if n := mc.misses(); n != 1 {
		t.Fatalf("%d full verifications of the same bytes, want 1", n)
	}
	// The cache must not turn an equal prefix or another name into a pass.
	if _, err := mc.verify("n2", b); !errors.Is(err, errMetaUnsigned) {
		t.Fatalf("same bytes under another name: %v", err)
	}
	bad := bytes.Clone(b)
	bad[len(bad)-1] ^= 1
	if _, err := mc.verify("n1", bad); err == nil {
		t.Fatal("a changed signature verifies")
	}
	// A failure does not evict what verified: the genuine bytes still hit.
	before := mc.misses()
	if _, err := mc.verify("n1", b); err != nil || mc.misses() != before {
		t.Fatalf("genuine bytes after a forgery: %v, misses %d → %d", err, before, mc.misses())
	}
	mc.forget("n1")
	if _, err := mc.verify("n1", b); err != nil || mc.misses() != before+1 {
		t.Fatalf("after forget: %v, misses %d, want %d", err, mc.misses(), before+1)
	}
}
