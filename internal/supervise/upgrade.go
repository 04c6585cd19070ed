package supervise

import (
	"context"
	"fmt"
	"os"
	"time"
)

// upgrade replaces the worker w with one running the binary at bin (""
// for the configured path): the new worker first checks its configuration
// in standby while the old one forwards; only then is the old one stopped
// (leaving ports and records alone) and the ports handed to the new one.
// A new binary that fails before the handover leaves the old worker
// running; one that fails after it is replaced by the old binary again.
// It returns the worker that runs afterwards.
func (s *Supervisor) upgrade(ctx context.Context, w *worker, bin string) *worker {
	if bin == "" {
		bin = s.cfg.Exe
	}
	start := time.Now()
	// attempts counts finished attempts: a status that shows this one
	// counted also shows its outcome.
	fail := func(why string) {
		s.mu.Lock()
		s.lastUpgrade = why
		s.attempts++
		s.pending = false
		s.mu.Unlock()
		s.log.Error("upgrade failed; the old worker keeps running", "binary", bin, "reason", why)
	}
	exe, err := os.Open(bin)
	if err != nil {
		fail(fmt.Sprintf("open the new binary: %v", err))
		s.sendInfo(w)
		return w
	}
	nw, err := s.start(exe, true)
	if err != nil {
		exe.Close()
		fail(err.Error())
		s.sendInfo(w)
		return w
	}
	select {
	case <-nw.standby:
	case <-nw.exited:
		nw.finish()
		exe.Close()
		fail(fmt.Sprintf("the new binary's worker ended before it was ready (%s); see its log above", exitString(nw.waitErr)))
		s.sendInfo(w)
		return w
	case <-time.After(standbyTimeout):
		s.stopWorker(nw, sigKill)
		exe.Close()
		fail(fmt.Sprintf("the new binary's worker did not check in within %v", standbyTimeout))
		s.sendInfo(w)
		return w
	case <-ctx.Done():
		s.stopWorker(nw, sigKill)
		exe.Close()
		fail("the supervisor is stopping")
		return w
	}
	// The old worker lets go: it closes its ports' fds and its sockets
	// without detaching anything or leaving the cluster.
	stopAt := time.Now()
	if err := w.send(&message{Op: opStop}, nil); err != nil {
		s.log.Warn("old worker link", "err", err)
	}
	select {
	case <-w.exited:
	case <-time.After(stopTimeout):
		s.log.Error("old worker did not stop; killing it", "pid", w.cmd.Process.Pid)
		_ = w.cmd.Process.Kill()
		<-w.exited
	}
	w.finish()
	s.mu.Lock()
	s.diedAt = time.Now()
	s.mu.Unlock()
	s.handover(nw, false)
	select {
	case <-nw.ready:
	case <-nw.exited:
	case <-time.After(readyTimeout):
		s.log.Error("new worker not ready in time; killing it", "pid", nw.cmd.Process.Pid)
	}
	select {
	case <-nw.ready:
	default:
		s.stopWorker(nw, sigKill)
		exe.Close()
		fail(fmt.Sprintf("the new binary's worker failed after taking over (%s); back to the old binary", exitString(nw.waitErr)))
		for {
			old, err := s.start(s.exe, false)
			if err == nil {
				return old
			}
			s.log.Error("cannot start a worker; retrying", "err", err, "in", backoffMax)
			select {
			case <-ctx.Done():
				return nw // exited: Run's ctx branch only closes the ports
			case <-time.After(backoffMax):
			}
		}
	}
	s.exe.Close()
	s.exe = exe
	s.mu.Lock()
	s.upgrades++
	s.attempts++
	s.pending = false
	s.lastUpgrade = "ok"
	s.mu.Unlock()
	s.log.Info("upgraded", "binary", bin, "pid", nw.cmd.Process.Pid, "handover", time.Since(stopAt).Round(time.Millisecond), "total", time.Since(start).Round(time.Millisecond))
	s.sendInfo(nw)
	return nw
}

// sendInfo tells a worker the supervisor's counters (for its status).
func (s *Supervisor) sendInfo(w *worker) {
	h := s.info()
	if err := w.send(&message{Op: opHandover, Handover: &h}, nil); err != nil {
		s.log.Warn("worker link", "err", err)
	}
}
