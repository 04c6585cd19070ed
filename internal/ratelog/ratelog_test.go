package ratelog

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestLogLimitsPerReasonAndCountsRepeats(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, nil)), time.Second)
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }

	if !l.Warn("a", "refused", "n", 1) {
		t.Fatal("first line of a reason was not written")
	}
	for i := 0; i < 5; i++ {
		if l.Warn("a", "refused") {
			t.Fatalf("repeat %d within the interval was written", i)
		}
	}
	if !l.Warn("b", "other reason") {
		t.Fatal("another reason was held back by the first")
	}
	now = now.Add(time.Second)
	if !l.Warn("a", "refused again") {
		t.Fatal("line after the interval was not written")
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d lines, want 3:\n%s", len(lines), buf.String())
	}
	if strings.Contains(lines[0], "repeated") || !strings.Contains(lines[2], "repeated=5") {
		t.Fatalf("repeat counts wrong:\n%s", buf.String())
	}
}

func TestLogBoundsReasons(t *testing.T) {
	l := New(slog.New(slog.DiscardHandler), time.Hour)
	for i := 0; i < 3*maxReasons; i++ {
		l.Warn(fmt.Sprint("r", i), "x")
	}
	if n := len(l.reasons); n > maxReasons+1 {
		t.Fatalf("%d reasons tracked, want at most %d", n, maxReasons+1)
	}
	if l.Warn("new", "x") {
		t.Fatal("a reason beyond the bound was not limited with the others")
	}
}

func TestNilLogger(t *testing.T) {
	var l *Logger
	if l.Warn("a", "x") {
		t.Fatal("nil Logger wrote")
	}
}
