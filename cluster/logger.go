package cluster

import (
	"context"
	"log"
	"log/slog"
	"strings"
)

// logWriter adapts memberlist's *log.Logger lines ("[WARN] memberlist: …")
// to slog: DEBUG and INFO become Debug (memberlist is chatty at INFO), WARN
// and ERR become Warn. It also feeds onSuspect with the one event memberlist
// has no delegate for: our own probes of a node failing.
type logWriter struct {
	log       *slog.Logger
	onSuspect func(name string)
}

const (
	suspectPrefix = "memberlist: Suspect "
	suspectSuffix = " has failed, no acks received"
)

func newMemberlistLogger(l *slog.Logger, onSuspect func(string)) *log.Logger {
	return log.New(&logWriter{log: l, onSuspect: onSuspect}, "", 0)
}

func (w *logWriter) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), "\n")
	level := slog.LevelDebug
	if rest, ok := strings.CutPrefix(line, "["); ok {
		if tag, msg, ok := strings.Cut(rest, "] "); ok {
			switch tag {
			case "WARN", "ERR", "ERROR":
				level = slog.LevelWarn
			}
			line = msg
		}
	}
	if name, ok := strings.CutPrefix(line, suspectPrefix); ok && w.onSuspect != nil {
		if name, ok = strings.CutSuffix(name, suspectSuffix); ok {
			w.onSuspect(name)
		}
	}
	w.log.Log(context.Background(), level, line, "component", "memberlist")
	return len(p), nil
}
