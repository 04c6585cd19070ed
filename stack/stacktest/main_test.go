package stacktest

import (
	"os"
	"testing"

	"gvisor.dev/gvisor/pkg/refs"
)

// TestMain makes gVisor track every reference-counted object (packet
// buffers above all) and panic at the end if one was never released.
func TestMain(m *testing.M) {
	refs.SetLeakMode(refs.LeaksPanic)
	code := m.Run()
	refs.DoLeakCheck()
	os.Exit(code)
}
