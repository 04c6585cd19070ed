package stack

import (
	"os"
	"testing"

	"gvisor.dev/gvisor/pkg/refs"
)

// TestMain makes gVisor panic at the end if a packet buffer was never
// released.
func TestMain(m *testing.M) {
	refs.SetLeakMode(refs.LeaksPanic)
	code := m.Run()
	refs.DoLeakCheck()
	os.Exit(code)
}
