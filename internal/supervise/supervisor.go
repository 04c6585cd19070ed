package supervise

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Env names the variable that tells `vrouter run` it is a worker: its
// value is the fd number of the link to the supervisor.
const Env = "VROUTER_SUPERVISOR_FD"

// Config is what `vrouter run` passes to Run.
type Config struct {
	// Exe is the binary workers run; it is opened once, so that a crash
	// restart runs the binary that was running even when the file has
	// been replaced since (only an upgrade switches to the new file).
	Exe      string
	Args     []string // the worker's arguments (run's own)
	StateDir string
	Logger   *slog.Logger
	Stdout   io.Writer // the workers' output; nil: os.Stdout/os.Stderr
	Stderr   io.Writer
	// Upgrades are requests to upgrade to the binary at the given path
	// ("" for Exe as it is now on disk): SIGHUP.
	Upgrades <-chan string
}

// Timings, variables for the package's tests.
var (
	// healthyAfter is how long a worker must have been ready for its
	// crash to count as a fresh one (restarted at once) rather than part
	// of a crash loop (backed off): one that served that long did not
	// die at once, and restarting it at once costs a start per second at
	// most.
	healthyAfter = time.Second
	backoffMin   = 250 * time.Millisecond
	backoffMax   = 30 * time.Second
	// stopTimeout bounds a worker's shutdown before it is killed.
	stopTimeout = 20 * time.Second
	// standbyTimeout bounds how long a new binary may take to check its
	// configuration during an upgrade.
	standbyTimeout = 20 * time.Second
	// readyTimeout bounds a worker's start, handover included.
	readyTimeout = 60 * time.Second
)

// held is one port the supervisor holds.
type held struct {
	port Port
	file *os.File
}

// Supervisor holds the ports of the node and runs its forwarding worker.
// It does no packet work and reads nothing but its workers' link.
//
// Locking: mu guards ports, life and the counters; the main loop (Run)
// and one reader goroutine per worker take it.
type Supervisor struct {
	cfg     Config
	log     *slog.Logger
	exe     *os.File
	started time.Time

	mu          sync.Mutex
	ports       map[string]*held
	journal     *Journal
	life        *Life
	restarts    int
	lastExit    string
	diedAt      time.Time
	backoff     time.Duration
	crashLoop   bool
	upgrades    int
	attempts    int  // upgrade attempts finished
	pending     bool // an upgrade is queued or under way
	lastUpgrade string
	dropped     []string

	upgradeReq chan string // from workers (vrouter upgrade)
}

// worker is one forwarding process.
type worker struct {
	cmd       *exec.Cmd
	conn      *net.UnixConn
	exited    chan struct{} // closed once reaped
	waitErr   error
	ready     chan struct{} // closed on "ready"
	standby   chan struct{} // closed on "standby"
	readyAt   time.Time     // set before ready is closed
	startedAt time.Time
	sendMu    sync.Mutex // replies from the reader and the main loop's messages
	reader    sync.WaitGroup
}

// Run supervises workers until ctx ends, then stops the worker (which
// detaches its containers) and closes every port. It returns an error
// only when no worker could be started at all.
func Run(ctx context.Context, cfg Config) error {
	s, err := newSupervisor(cfg)
	if err != nil {
		return err
	}
	defer s.exe.Close()
	s.reconcile()
	w, err := s.start(s.exe, false)
	if err != nil {
		s.closeAll()
		return err
	}
	fast := 0       // consecutive crashes of workers that were not healthy
	everUp := false // a worker got ready once: from then on, restart
	for {
		select {
		case <-ctx.Done():
			s.stopWorker(w, syscall.SIGTERM)
			s.closeAll()
			return nil
		case bin := <-s.upgradeReq:
			w = s.upgrade(ctx, w, bin)
		case bin := <-cfg.Upgrades:
			s.mu.Lock()
			busy := s.pending
			s.pending = true
			s.mu.Unlock()
			if busy {
				s.log.Warn("SIGHUP ignored: an upgrade is already under way")
				continue
			}
			w = s.upgrade(ctx, w, bin)
		case <-w.exited:
			w.finish()
			if !w.readyAt.IsZero() {
				everUp = true
			}
			if !everUp {
				// The first worker failed to start (a bad key file, a
				// port in use): that is vrouter run failing, as it did
				// before there was a supervisor; restarting cannot fix it.
				s.closeAll()
				return &StartError{Exit: exitString(w.waitErr)}
			}
			healthy := !w.readyAt.IsZero() && time.Since(w.readyAt) >= healthyAfter
			if healthy {
				fast = 0
			}
			fast++
			wait := time.Duration(0)
			if fast > 1 {
				wait = min(backoffMin<<(fast-2), backoffMax)
			}
			s.mu.Lock()
			s.restarts++
			s.lastExit = exitString(w.waitErr)
			s.diedAt = time.Now()
			s.backoff, s.crashLoop = wait, fast > 1
			n := s.restarts
			s.mu.Unlock()
			if fast > 1 {
				s.log.Error("worker crash loop: restarting after a backoff", "exit", exitString(w.waitErr), "restarts", n, "consecutive", fast, "backoff", wait)
			} else {
				s.log.Error("worker died; restarting it at once", "exit", exitString(w.waitErr), "restarts", n)
			}
			select {
			case <-ctx.Done():
				s.closeAll()
				return nil
			case <-time.After(wait):
			}
			for {
				w, err = s.start(s.exe, false)
				if err == nil {
					break
				}
				// Fork or socketpair failing: the host is short of
				// something; keep the ports and try again.
				s.log.Error("cannot start a worker; retrying", "err", err, "in", backoffMax)
				select {
				case <-ctx.Done():
					s.closeAll()
					return nil
				case <-time.After(backoffMax):
				}
			}
		}
	}
}

func newSupervisor(cfg Config) (*Supervisor, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	exe, err := os.Open(cfg.Exe)
	if err != nil {
		return nil, fmt.Errorf("supervisor: worker binary: %w", err)
	}
	return &Supervisor{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "supervisor"),
		exe:        exe,
		started:    time.Now(),
		ports:      make(map[string]*held),
		journal:    unwrittenJournal(cfg.StateDir),
		upgradeReq: make(chan string, 1),
	}, nil
}

// reconcile compares the journal with the fds the supervisor holds. A
// supervisor that starts holds none (they died with the last one), so
// every journalled port is reported lost and the journal emptied.
func (s *Supervisor) reconcile() {
	ports, err := ReadJournal(s.cfg.StateDir)
	if err != nil {
		s.log.Error("port journal unreadable; starting without it", "err", err)
	}
	for _, p := range ports {
		s.log.Error("port lost: its fd did not survive the previous supervisor; the container must be attached again",
			"id", p.ID, "network", p.Network, "ip", p.IP, "interface", p.Interface, "netns", p.Netns)
		s.dropped = append(s.dropped, p.ID)
	}
	j, err := NewJournal(s.cfg.StateDir, nil)
	if err != nil {
		s.log.Error("port journal", "err", err)
	}
	s.mu.Lock()
	s.journal = j
	s.mu.Unlock()
}

// start starts a worker from exe and hands it the ports (none in standby:
// it only checks its configuration and then waits for a second handover).
func (s *Supervisor) start(exe *os.File, standby bool) (*worker, error) {
	conn, theirs, err := socketpair()
	if err != nil {
		return nil, err
	}
	defer theirs.Close()
	cmd := exec.Command(fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), exe.Fd()), s.cfg.Args...)
	cmd.Args[0] = "vrouter"
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=3", Env))
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stdout, cmd.Stderr = s.cfg.Stdout, s.cfg.Stderr
	if cmd.Stdout == nil {
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	}
	// Its own process group: a terminal's Ctrl-C reaches the supervisor
	// only, which stops the worker in order. Pdeathsig: a worker never
	// outlives its supervisor (it would hold ports nobody can restart).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("start worker: %w", err)
	}
	w := &worker{cmd: cmd, conn: conn, startedAt: time.Now(), exited: make(chan struct{}), ready: make(chan struct{}), standby: make(chan struct{})}
	go func() {
		w.waitErr = cmd.Wait()
		close(w.exited)
	}()
	w.reader.Add(1)
	go s.read(w)
	s.log.Info("worker started", "pid", cmd.Process.Pid, "standby", standby)
	s.handover(w, standby)
	return w, nil
}

// finish releases what a reaped worker leaves: its link and reader.
func (w *worker) finish() {
	w.conn.Close()
	w.reader.Wait()
}

func (w *worker) send(m *message, f *os.File) error {
	w.sendMu.Lock()
	defer w.sendMu.Unlock()
	return send(w.conn, m, f)
}

// handover sends the held ports and the handover message. A port the
// link refuses on its own (not because the worker is gone) is closed and
// reported: it is never kept for a worker that cannot have it.
func (s *Supervisor) handover(w *worker, standby bool) {
	if !standby {
		s.mu.Lock()
		hs := make([]*held, 0, len(s.ports))
		for _, h := range s.ports {
			hs = append(hs, h)
		}
		s.mu.Unlock()
		slices.SortFunc(hs, func(a, b *held) int { return strings.Compare(a.port.ID, b.port.ID) })
		for _, h := range hs {
			p := h.port
			err := w.send(&message{Op: opPort, Port: &p}, h.file)
			if err == nil {
				continue
			}
			if linkGone(err) {
				s.log.Warn("worker went away during the handover", "pid", w.cmd.Process.Pid, "err", err)
				return // the exit path starts another, which gets them all
			}
			s.log.Error("port handover failed; port closed (its TUN disappears)", "id", p.ID, "network", p.Network, "ip", p.IP, "err", err)
			s.drop(p.ID)
		}
	}
	h := s.info()
	h.Standby = standby
	if err := w.send(&message{Op: opHandover, Handover: &h}, nil); err != nil {
		s.log.Warn("worker went away during the handover", "pid", w.cmd.Process.Pid, "err", err)
	}
}

func linkGone(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed)
}

// info is the supervisor's part of a worker's status.
func (s *Supervisor) info() Handover {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := Handover{
		SupervisorPID: os.Getpid(),
		Restarts:      s.restarts,
		StartedAt:     s.started,
		LastExit:      s.lastExit,
		DiedAt:        s.diedAt,
		Backoff:       s.backoff.Seconds(),
		CrashLoop:     s.crashLoop,
		Upgrades:      s.upgrades,
		LastUpgrade:   s.lastUpgrade,
		Dropped:       slices.Clone(s.dropped),
	}
	h.Attempts = s.attempts
	if s.life != nil {
		l := *s.life
		h.Life = &l
	}
	return h
}

// drop closes a held port and journals its loss.
func (s *Supervisor) drop(id string) {
	s.mu.Lock()
	h := s.ports[id]
	delete(s.ports, id)
	if h != nil {
		s.dropped = append(s.dropped, id)
	}
	err := s.journal.Delete(id)
	s.mu.Unlock()
	if h != nil {
		h.file.Close()
	}
	if err != nil {
		s.log.Error("port journal", "err", err)
	}
}

// read serves one worker's requests until its link closes.
func (s *Supervisor) read(w *worker) {
	defer w.reader.Done()
	buf, oob := newBufs()
	for {
		m, f, err := recv(w.conn, buf, oob)
		if err != nil {
			if !errors.Is(err, errEOF) && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.log.Warn("worker link", "pid", w.cmd.Process.Pid, "err", err)
			}
			return
		}
		reply := &message{Op: opReply}
		switch m.Op {
		case opHold:
			if err := s.hold(m.Port, f); err != nil {
				reply.Error = err.Error()
			}
			f = nil
		case opRelease:
			s.release(m.ID)
		case opLife:
			if m.Life != nil {
				s.mu.Lock()
				l := *m.Life
				s.life = &l
				s.mu.Unlock()
			}
		case opReady:
			w.readyAt = time.Now()
			s.log.Info("worker ready", "pid", w.cmd.Process.Pid, "took", w.readyAt.Sub(w.startedAt).Round(time.Millisecond))
			close(w.ready)
			continue
		case opStandby:
			close(w.standby)
			continue
		case opUpgrade:
			s.mu.Lock()
			if s.pending {
				reply.Error = "an upgrade is already under way"
			} else {
				// One at a time: this one is the next to finish.
				s.pending = true
				s.upgradeReq <- m.Binary // capacity 1, empty while not pending
				reply.Handover = &Handover{Attempts: s.attempts + 1}
			}
			s.mu.Unlock()
		default:
			reply.Error = fmt.Sprintf("unknown op %q", m.Op)
		}
		if f != nil {
			f.Close()
		}
		if err := w.send(reply, nil); err != nil {
			s.log.Warn("worker link", "pid", w.cmd.Process.Pid, "err", err)
		}
	}
}

func (s *Supervisor) hold(p *Port, f *os.File) error {
	if p == nil || f == nil || p.ID == "" {
		if f != nil {
			f.Close()
		}
		return errors.New("hold needs a port and its fd")
	}
	s.mu.Lock()
	old := s.ports[p.ID]
	s.ports[p.ID] = &held{port: *p, file: f}
	err := s.journal.Put(*p)
	if err != nil {
		// Not journalled means not held: a port the journal does not
		// list would be lost without a report.
		delete(s.ports, p.ID)
		if old != nil {
			s.ports[p.ID] = old
			old = nil
		}
	}
	s.mu.Unlock()
	if old != nil {
		old.file.Close()
	}
	if err != nil {
		f.Close()
		return err
	}
	return nil
}

func (s *Supervisor) release(id string) {
	s.mu.Lock()
	h := s.ports[id]
	delete(s.ports, id)
	err := s.journal.Delete(id)
	s.mu.Unlock()
	if h != nil {
		h.file.Close()
	}
	if err != nil {
		s.log.Error("port journal", "err", err)
	}
}

// closeAll closes every held port (concurrently: the kernel takes ~20 ms
// to unregister each TUN) and empties the journal.
func (s *Supervisor) closeAll() {
	s.mu.Lock()
	hs := s.ports
	s.ports = make(map[string]*held)
	err := s.journal.Reset(nil)
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, h := range hs {
		wg.Go(func() { h.file.Close() })
	}
	wg.Wait()
	if err != nil {
		s.log.Error("port journal", "err", err)
	}
}

// stopWorker signals w and waits for it, killing it after stopTimeout.
func (s *Supervisor) stopWorker(w *worker, sig syscall.Signal) {
	select {
	case <-w.exited:
	default:
		_ = w.cmd.Process.Signal(sig)
		select {
		case <-w.exited:
		case <-time.After(stopTimeout):
			s.log.Error("worker ignored the stop; killing it", "pid", w.cmd.Process.Pid)
			_ = w.cmd.Process.Kill()
			<-w.exited
		}
	}
	w.finish()
}

// exitString says how a worker ended.
func exitString(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

const sigKill = syscall.SIGKILL

// StartError is Run's error when the first worker failed before it was up.
// The worker has said why on stderr.
type StartError struct{ Exit string }

func (e *StartError) Error() string { return "the forwarding worker failed to start (" + e.Exit + ")" }

// LockStateDir takes STATE-DIR/supervisor.lock, so that a second `vrouter
// run` on the same state dir fails at once instead of rewriting the
// first one's port journal.
func LockStateDir(dir string) (unlock func(), err error) {
	path := filepath.Join(dir, "supervisor.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("supervisor lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("state dir %s is in use by another vrouter run", dir)
		}
		return nil, fmt.Errorf("supervisor lock: %w", err)
	}
	return func() { f.Close() }, nil
}
