package poll

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// fakeTB records Fatalf and ends its goroutine, as testing.T does.
type fakeTB struct {
	testing.TB
	msg string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run calls fn with a fakeTB on its own goroutine and returns what Fatalf
// said ("" if it was not called).
func run(fn func(tb *fakeTB)) string {
	tb := &fakeTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(tb)
	}()
	<-done
	return tb.msg
}

func TestUntilHolds(t *testing.T) {
	calls := 0
	msg := run(func(tb *fakeTB) {
		Until(tb, 10*time.Second, "third call", func() bool {
			calls++
			return calls == 3
		})
	})
	if msg != "" || calls != 3 {
		t.Fatalf("Until: Fatalf %q after %d calls, want none after 3", msg, calls)
	}
}

func TestUntilTimesOut(t *testing.T) {
	calls := 0
	msg := run(func(tb *fakeTB) {
		Until(tb, 20*time.Millisecond, "never", func() bool { calls++; return false })
	})
	if !strings.Contains(msg, "waiting for: never") || calls < 2 {
		t.Fatalf("Until never true: Fatalf %q after %d calls", msg, calls)
	}
}

func TestUntilNilReportsLastError(t *testing.T) {
	calls := 0
	msg := run(func(tb *fakeTB) {
		UntilNil(tb, 20*time.Millisecond, "a socket", func() error {
			calls++
			return fmt.Errorf("attempt %d: %w", calls, errors.ErrUnsupported)
		})
	})
	if want := fmt.Sprintf("waiting for: a socket: attempt %d:", calls); !strings.Contains(msg, want) {
		t.Fatalf("UntilNil: Fatalf %q, want it to contain %q", msg, want)
	}
	msg = run(func(tb *fakeTB) {
		UntilNil(tb, time.Second, "nil at once", func() error { return nil })
	})
	if msg != "" {
		t.Fatalf("UntilNil with nil at once: Fatalf %q", msg)
	}
}

func TestWithin(t *testing.T) {
	calls := 0
	if !Within(10*time.Second, func() bool { calls++; return calls == 2 }) || calls != 2 {
		t.Fatalf("Within: false or %d calls, want true after 2", calls)
	}
	if Within(10*time.Millisecond, func() bool { return false }) {
		t.Fatal("Within of a never-true condition reported true")
	}
}
