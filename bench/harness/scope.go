package harness

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
)

// scope owns what one part of the run created (processes, namespaces,
// files) and undoes it in reverse order. Every scenario has its own, so a
// scenario's namespaces and daemons are gone before the next one starts,
// and the suite has one for what lives through the run. Undo functions
// must be bounded in time themselves.
type scope struct {
	name string
	log  *slog.Logger

	mu     sync.Mutex
	undo   []undoStep
	closed bool
}

type undoStep struct {
	what string
	fn   func() error
}

func newScope(name string, log *slog.Logger) *scope {
	return &scope{name: name, log: log}
}

// add registers fn to run when the scope closes. Adding to a closed scope
// runs fn at once, so nothing created late is left behind.
func (sc *scope) add(what string, fn func() error) {
	sc.mu.Lock()
	if sc.closed {
		sc.mu.Unlock()
		if err := fn(); err != nil {
			sc.log.Warn("cleanup", "scope", sc.name, "what", what, "err", err)
		}
		return
	}
	sc.undo = append(sc.undo, undoStep{what, fn})
	sc.mu.Unlock()
}

// close runs every undo step, last added first, and returns their errors
// joined. It runs each step once, however often it is called.
func (sc *scope) close() error {
	sc.mu.Lock()
	steps := sc.undo
	sc.undo, sc.closed = nil, true
	sc.mu.Unlock()
	var errs []error
	for i := len(steps) - 1; i >= 0; i-- {
		if err := steps[i].fn(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", steps[i].what, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		sc.log.Warn("cleanup failed", "scope", sc.name, "err", err)
		return err
	}
	return nil
}
