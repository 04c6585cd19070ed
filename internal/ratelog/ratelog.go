// Package ratelog writes log lines that outsiders or containers can
// trigger (undecryptable gossip, refused flows, malformed packets) at most
// once per interval per reason, with the number of repeats left out since
// the previous line: the counters keep every event, the log stays readable
// and cannot be flooded.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// DefaultInterval is the least time between two lines of one reason.
const DefaultInterval = 5 * time.Second

// maxReasons bounds the reasons tracked: reasons are meant to be a fixed
// set; beyond it, new reasons share one entry rather than grow the map.
const maxReasons = 256

// Logger rate-limits lines per reason. The zero value is not usable; use
// New. Safe for concurrent use.
type Logger struct {
	log   *slog.Logger
	every time.Duration
	now   func() time.Time // tests

	mu      sync.Mutex
	reasons map[string]*entry
}

type entry struct {
	last       time.Time // of the last line written
	suppressed uint64    // events since that line that wrote none
}

// New returns a Logger writing to log at most once per every per reason
// (0: DefaultInterval).
func New(log *slog.Logger, every time.Duration) *Logger {
	if every <= 0 {
		every = DefaultInterval
	}
	return &Logger{log: log, every: every, now: time.Now, reasons: make(map[string]*entry)}
}

// Log writes msg with args at level unless a line of reason was written
// less than the interval ago; then it only counts the event. A line after
// suppressed events carries "repeated" (how many were left out). It
// reports whether it wrote.
func (l *Logger) Log(level slog.Level, reason, msg string, args ...any) bool {
	if l == nil {
		return false
	}
	now := l.now()
	l.mu.Lock()
	e := l.reasons[reason]
	if e == nil && len(l.reasons) >= maxReasons {
		e = l.reasons["(other)"]
	}
	if e == nil {
		e = &entry{}
		if len(l.reasons) >= maxReasons {
			reason = "(other)"
		}
		l.reasons[reason] = e
	}
	if !e.last.IsZero() && now.Sub(e.last) < l.every {
		e.suppressed++
		l.mu.Unlock()
		return false
	}
	repeated := e.suppressed
	e.suppressed = 0
	e.last = now
	l.mu.Unlock()
	if !l.log.Enabled(context.Background(), level) {
		return true
	}
	if repeated > 0 {
		args = append(args, "repeated", repeated)
	}
	l.log.Log(context.Background(), level, msg, args...)
	return true
}

// Warn is Log at slog.LevelWarn.
func (l *Logger) Warn(reason, msg string, args ...any) bool {
	return l.Log(slog.LevelWarn, reason, msg, args...)
}

// Info is Log at slog.LevelInfo.
func (l *Logger) Info(reason, msg string, args ...any) bool {
	return l.Log(slog.LevelInfo, reason, msg, args...)
}
