package flowlog

import (
	"fmt"
	"os"
	"sync/atomic"
)

// rotator appends to a file and, when a write would take it past max
// bytes, renames it to PATH.1 (replacing the previous one) and starts a
// new one: the log takes at most about 2×max on disk. Written by hand
// rather than with lumberjack: its compressing goroutine is never stopped
// by Close, and one rename is all we need. Only the logger's goroutine
// (or Close after it) writes.
type rotator struct {
	path      string
	max       int64
	f         *os.File
	size      int64
	rotations atomic.Uint64
}

func openRotator(path string, max int64) (*rotator, error) {
	r := &rotator{path: path, max: max}
	if err := r.open(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *rotator) open() error {
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("flow log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("flow log: %w", err)
	}
	r.f, r.size = f, st.Size()
	return nil
}

// Write writes p whole to the current file, rotating first if needed.
func (r *rotator) Write(p []byte) (int, error) {
	if r.size > 0 && r.size+int64(len(p)) > r.max {
		if err := r.rotate(); err != nil {
			return 0, err
		}
	}
	n, err := r.f.Write(p)
	r.size += int64(n)
	return n, err
}

func (r *rotator) rotate() error {
	if err := r.f.Close(); err != nil {
		return fmt.Errorf("flow log: close for rotation: %w", err)
	}
	if err := os.Rename(r.path, r.path+".1"); err != nil {
		// Keep logging to the same file rather than losing records.
		if oerr := r.open(); oerr != nil {
			return oerr
		}
		return fmt.Errorf("flow log: rotate: %w", err)
	}
	r.rotations.Add(1)
	return r.open()
}

func (r *rotator) Close() error {
	if err := r.f.Close(); err != nil {
		return fmt.Errorf("flow log: %w", err)
	}
	return nil
}
