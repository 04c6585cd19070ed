package cluster

import (
	"context"
	"log"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/vrouter/vrouter/internal/ratelog"
)

// logWriter adapts memberlist's *log.Logger lines ("[WARN] memberlist: …")
// to slog: DEBUG and INFO become Debug (memberlist is chatty at INFO), WARN
// and ERR become Warn. It also feeds onSuspect with the one event memberlist
// has no delegate for: our own probes of a node failing.
//
// Anyone who can send a datagram to the gossip port makes memberlist log
// (an undecryptable packet is one ERR line each), so warnings are counted
// always and written at most once per interval per kind of message, with
// the number left out (ratelog).
type logWriter struct {
	log       *slog.Logger
	limited   *ratelog.Logger
	onSuspect func(name string)

	warnings      atomic.Uint64 // WARN and ERR lines, written or not
	undecryptable atomic.Uint64 // packets that failed to decrypt
}

const (
	suspectPrefix  = "memberlist: Suspect "
	suspectSuffix  = " has failed, no acks received"
	decryptFailed  = "memberlist: Decrypt packet failed"
	maxReasonBytes = 64
)

func newLogWriter(l *slog.Logger, onSuspect func(string)) *logWriter {
	return &logWriter{log: l, limited: ratelog.New(l, 0), onSuspect: onSuspect}
}

func (w *logWriter) logger() *log.Logger { return log.New(w, "", 0) }

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
	if level < slog.LevelWarn {
		w.log.Log(context.Background(), level, line, "component", "memberlist")
		return len(p), nil
	}
	w.warnings.Add(1)
	if strings.HasPrefix(line, decryptFailed) {
		w.undecryptable.Add(1)
	}
	w.limited.Warn(logReason(line), line, "component", "memberlist")
	return len(p), nil
}

// logReason is the kind of a memberlist message: its text up to the first
// colon after "memberlist: ", where the details (error, address) begin.
func logReason(line string) string {
	rest, _ := strings.CutPrefix(line, "memberlist: ")
	kind, _, _ := strings.Cut(rest, ":")
	if len(kind) > maxReasonBytes {
		kind = kind[:maxReasonBytes]
	}
	return kind
}
