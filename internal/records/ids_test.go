package records

import "testing"

func TestOverlayAddr(t *testing.T) {
	a, b := OverlayAddr("node-a"), OverlayAddr("node-b")
	if !OverlayPrefix.Contains(a) || !OverlayPrefix.Contains(b) || a == b || a != OverlayAddr("node-a") {
		t.Fatalf("overlay addresses %v %v", a, b)
	}
}

func TestVNIs(t *testing.T) {
	pn, app := "pn-ad0fd6a1-d05e-40ea-bf63-c4f8a75a9d8c", "ap-a71da13f-7c70-4c00-a644-eee8558d8053"
	for _, v := range []uint32{VNI(pn), EgressVNI(app, pn)} {
		if v == 0 || v > 0xffffff {
			t.Fatalf("VNI %d outside 1..2^24-1", v)
		}
	}
	if VNI(pn) != VNI(pn) || VNI(pn) == VNI(pn+"x") || EgressVNI(app, pn) == EgressVNI(app, pn+"x") || EgressVNI(app, pn) == VNI(pn) {
		t.Fatal("VNIs are not per network (and per app for egress)")
	}
}
