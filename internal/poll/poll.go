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
	took, err := wait(timeout, check)
	switch {
	case err == errNotYet:
		t.Fatalf("timed out after %v waiting for: %s", timeout, what)
	case err != nil:
		t.Fatalf("timed out after %v waiting for: %s: %v", timeout, what, err)
	}
	return took
}

// Within polls cond for at most timeout and reports whether it held: for a
// wait whose outcome the test only logs or branches on.
func Within(timeout time.Duration, cond func() bool) bool {
	_, err := wait(timeout, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
	return err == nil
}

// wait is the one loop: check until nil or timeout, backing off.
func wait(timeout time.Duration, check func() error) (time.Duration, error) {
	start := time.Now()
	pause := firstWait
	for {
		err := check()
		if err == nil || time.Since(start) > timeout {
			return time.Since(start), err
		}
		time.Sleep(pause)
		pause = min(2*pause, maxWait)
	}
}
