package cluster

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// TestMemberlistLogRateLimited: a flood of undecryptable packets (anyone
// can send them to the gossip port) is counted in full and written once
// per interval; other kinds of warning are not held back by it, and the
// suspect hook still sees its line.
func TestMemberlistLogRateLimited(t *testing.T) {
	var buf bytes.Buffer
	var suspects []string
	w := newLogWriter(slog.New(slog.NewTextHandler(&buf, nil)), func(n string) { suspects = append(suspects, n) })
	l := w.logger()
	for i := range 1000 {
		l.Printf("[ERR] memberlist: Decrypt packet failed: cipher: message authentication failed from=127.0.0.%d:7946", i%250)
	}
	l.Printf("[WARN] memberlist: Got invalid checksum for UDP packet: 1, 2")
	l.Printf("[INFO] memberlist: Suspect n2 has failed, no acks received")
	out := buf.String()
	if n := strings.Count(out, "Decrypt packet failed"); n != 1 {
		t.Errorf("%d decrypt lines written, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, "invalid checksum") {
		t.Errorf("another warning was held back:\n%s", out)
	}
	if w.undecryptable.Load() != 1000 || w.warnings.Load() != 1001 {
		t.Errorf("counted %d undecryptable, %d warnings", w.undecryptable.Load(), w.warnings.Load())
	}
	if fmt.Sprint(suspects) != "[n2]" {
		t.Errorf("suspects %v", suspects)
	}
}

func TestLogReason(t *testing.T) {
	for line, want := range map[string]string{
		"memberlist: Decrypt packet failed: x from=1.2.3.4:5": "Decrypt packet failed",
		"memberlist: Too many pending push/pull requests":     "Too many pending push/pull requests",
		"no prefix: rest":                         "no prefix",
		"memberlist: " + strings.Repeat("x", 200): strings.Repeat("x", maxReasonBytes),
	} {
		if got := logReason(line); got != want {
			t.Errorf("logReason(%q) = %q, want %q", line, got, want)
		}
	}
}
