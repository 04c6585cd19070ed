package records

import (
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
