// Package poll waits, in tests, for something another goroutine or process
// makes true: a gossiped record, a counter, a daemon's socket. It is the one
// poll-until loop of the test tiers.
//
// The wait starts at a millisecond and backs off to 50 ms, so a cheap
// condition is seen soon after it holds and an expensive one (a command
// run per check) does not load the machine. The timeout only bounds a
// failure: it is generous because the unit tier runs -race on a loaded
// machine, and no test asserts how long the wait took.
package poll

import (
	"errors"
	"testing"
	"time"
)

const (
	firstWait = time.Millisecond
	maxWait   = 50 * time.Millisecond
)

// Until polls cond until it holds and returns how long that took (for logs).
// After timeout it fails t with what it was waiting for.
func Until(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	return UntilNil(t, timeout, what, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
}

var errNotYet = errors.New("condition not met")

// UntilNil polls check until it returns nil and returns how long that took.
// After timeout it fails t with what it was waiting for and check's last
// error.
func UntilNil(t testing.TB, timeout time.Duration, what string, check func() error) time.Duration {
	t.Helper()
	start := time.Now()
	wait := firstWait
	for {
		err := check()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			if err == errNotYet {
				t.Fatalf("timed out after %v waiting for: %s", timeout, what)
			} else {
				t.Fatalf("timed out after %v waiting for: %s: %v", timeout, what, err)
			}
			return time.Since(start)
		}
		time.Sleep(wait)
		wait = min(2*wait, maxWait)
	}
}
