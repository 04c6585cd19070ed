// Package leaktest checks that a test leaves no goroutine behind. It
// compares counts rather than stacks, like wireguard-go's
// goroutineLeakCheck: a test that starts and stops its own goroutines must
// end with no more than it began with.
package leaktest

import (
	"runtime"
	"testing"
	"time"
)

// Check records the goroutine count now and, when the test ends (after its
// other cleanups, as Check should be called first), fails it if more
// goroutines are still running 5 s later, printing every stack. A test
// that already failed is not checked.
func Check(t testing.TB) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		if t.Failed() {
			return // a failed test may leave goroutines; its own error says why
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutine leak: %d before, %d after\n%s", before, n, buf)
				return
			}
			// Polling, not synchronisation: exiting goroutines have no
			// event to wait on.
			time.Sleep(10 * time.Millisecond)
		}
	})
}
