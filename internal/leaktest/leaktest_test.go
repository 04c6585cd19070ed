package leaktest

import (
	"testing"
)

// recorder stands in for a test so that Check's verdict can be inspected.
type recorder struct {
	testing.TB
	cleanups []func()
	failed   bool
}

func (r *recorder) Helper()               {}
func (r *recorder) Cleanup(f func())      { r.cleanups = append(r.cleanups, f) }
func (r *recorder) Errorf(string, ...any) { r.failed = true }
func (r *recorder) run() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

func TestCheckPassesWhenGoroutinesEnd(t *testing.T) {
	r := &recorder{TB: t}
	Check(r)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { <-stop; close(done) }()
	close(stop)
	<-done
	r.run()
	if r.failed {
		t.Error("Check failed although the goroutine ended")
	}
}

func TestCheckFailsOnLeak(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the 5 s deadline")
	}
	r := &recorder{TB: t}
	Check(r)
	// Several, so that a goroutine of the test machinery that happened to
	// be exiting when Check counted cannot hide the leak.
	stop := make(chan struct{})
	for range 5 {
		go func() { <-stop }()
	}
	r.run()
	close(stop)
	if !r.failed {
		t.Error("Check passed although a goroutine was still running")
	}
}
