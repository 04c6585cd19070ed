package keys

import (
	"encoding/base64"
	"testing"
)

func TestGenerate(t *testing.T) {
	k1, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	k2, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	if k1 == k2 || k1 == ([Size]byte{}) {
		t.Fatalf("keys not random: %x %x", k1, k2)
	}
	b, err := base64.StdEncoding.DecodeString(Encode(k1))
	if err != nil || string(b) != string(k1[:]) {
		t.Fatalf("Encode(%x) = %q does not decode back (%v)", k1, Encode(k1), err)
	}
}

func TestClamp(t *testing.T) {
	var all, none [Size]byte
	for i := range all {
		all[i] = 0xff
	}
	if got := Clamp(all); got[0] != 0xf8 || got[31] != 0x7f || got[1] != 0xff {
		t.Errorf("Clamp(ff…) = %x", got)
	}
	if got := Clamp(none); got[0] != 0 || got[31] != 0x40 {
		t.Errorf("Clamp(00…) = %x", got)
	}
	k := Clamp(all)
	if Clamp(k) != k {
		t.Errorf("Clamp is not idempotent")
	}
}
