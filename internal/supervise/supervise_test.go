package supervise

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/leaktest"
	"github.com/vrouter/vrouter/internal/poll"
)

// The test binary doubles as the worker: with Env set, TestMain runs
// fakeWorker instead of the tests.
func TestMain(m *testing.M) {
	if os.Getenv(Env) != "" {
		os.Exit(fakeWorker())
	}
	os.Exit(m.Run())
}

const (
	modeEnv = "SUPERVISE_TEST_MODE"
	fifoEnv = "SUPERVISE_TEST_FIFO"
)

// fakeWorker takes the handover, then:
//   - for each port handed over, writes "restored <id> <ip>\n" into it (a
//     pipe standing in for a TUN), and reports the port on stdout;
//   - "hold": when no port came, holds the FIFO at $SUPERVISE_TEST_FIFO
//     as port "c-1";
//   - "die": exits at once with status 3; "dieagain": so does every
//     worker after the first;
//   - then says ready and waits for stop or the link to close.
func fakeWorker() int {
	link, err := FromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer link.Close()
	mode := os.Getenv(modeEnv)
	if mode == "die" {
		return 3
	}
	ports, h, err := link.Handover()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if mode == "dieagain" && h.Restarts > 0 {
		return 3
	}
	if h.Standby {
		if err := link.Standby("fake"); err != nil {
			return 1
		}
		if ports, h, err = link.Handover(); err != nil {
			return 1
		}
	}
	link.Start()
	for _, p := range ports {
		fmt.Fprintf(p.File, "restored %s %s restarts=%d\n", p.Port.ID, p.Port.IP, h.Restarts)
		p.File.Close()
	}
	if len(ports) == 0 && mode == "hold" {
		f, err := os.OpenFile(os.Getenv(fifoEnv), os.O_RDWR, 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		p := Port{Container: control.Container{ID: "c-1", IP: "10.240.0.7", Network: "pn-x"}}
		if err := link.Hold(p, f); err != nil {
			fmt.Fprintln(os.Stderr, "hold:", err)
			return 1
		}
		f.Close()
		if err := link.SetLife(Life{GossipPort: 7946, Peers: []string{"127.0.0.1:7000"}}); err != nil {
			return 1
		}
	}
	if err := link.Ready(); err != nil {
		return 1
	}
	select {
	case <-link.Stopped():
	case <-link.Gone():
	}
	return 0
}

type harness struct {
	t      *testing.T
	dir    string
	cancel context.CancelFunc
	done   chan error
	logMu  sync.Mutex
	log    strings.Builder
}

func (h *harness) Write(p []byte) (int, error) {
	h.logMu.Lock()
	defer h.logMu.Unlock()
	return h.log.Write(p)
}

func (h *harness) logs() string {
	h.logMu.Lock()
	defer h.logMu.Unlock()
	return h.log.String()
}

// startSupervisor runs Run with the test binary as worker.
func startSupervisor(t *testing.T, mode string, upgrades chan string) *harness {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(modeEnv, mode)
	h := &harness{t: t, dir: t.TempDir(), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() {
		h.done <- Run(ctx, Config{Exe: exe, Args: []string{"-test.run=^$"}, StateDir: h.dir,
			Logger: slog.New(slog.NewTextHandler(h, nil)), Stdout: h, Stderr: h, Upgrades: upgrades})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-h.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("Run did not return")
		}
		if t.Failed() {
			t.Logf("log:\n%s", h.logs())
		}
	})
	return h
}

// A first worker that cannot start makes Run fail: no crash loop.
func TestFirstWorkerFails(t *testing.T) {
	leaktest.Check(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(modeEnv, "die")
	var logs harness
	err = Run(context.Background(), Config{Exe: exe, Args: []string{"-test.run=^$"}, StateDir: t.TempDir(),
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), Stdout: &logs, Stderr: &logs})
	var se *StartError
	if !errors.As(err, &se) || se.Exit != "exit status 3" {
		t.Fatalf("Run = %v, want a StartError with exit status 3", err)
	}
	if strings.Contains(logs.logs(), "restarting") {
		t.Fatalf("restarted a worker that never started:\n%s", logs.logs())
	}
}

func TestJournalRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if ps, err := ReadJournal(dir); err != nil || len(ps) != 0 {
		t.Fatalf("no journal: %v, %v", ps, err)
	}
	in := []Port{{Container: control.Container{ID: "c-2", IP: "10.240.0.2"}, VnetHdr: true}, {Container: control.Container{ID: "c-1", IP: "10.240.0.1"}}}
	if err := WriteJournal(dir, in); err != nil {
		t.Fatal(err)
	}
	out, err := ReadJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 || out[0].ID != "c-1" || out[1].ID != "c-2" || !out[1].VnetHdr || out[1].IP != "10.240.0.2" {
		t.Fatalf("journal round trip: %+v", out)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Fatalf("want %s and %s, no temporary files: %v", JournalFile, JournalLog, ents)
	}
	if err := os.WriteFile(filepath.Join(dir, JournalFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadJournal(dir); err == nil {
		t.Fatal("a torn journal was accepted")
	}
}

// A supervisor starting with a journal holds none of its fds: each
// journalled port is reported lost and the journal emptied.
func TestReconcileReportsLostPorts(t *testing.T) {
	dir := t.TempDir()
	if err := WriteJournal(dir, []Port{{Container: control.Container{ID: "c-gone", IP: "10.240.0.9"}}}); err != nil {
		t.Fatal(err)
	}
	s, err := newSupervisor(Config{Exe: "/proc/self/exe", StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.exe.Close()
	s.reconcile()
	if h := s.info(); len(h.Dropped) != 1 || h.Dropped[0] != "c-gone" {
		t.Fatalf("dropped = %v", h.Dropped)
	}
	if ps, _ := ReadJournal(dir); len(ps) != 0 {
		t.Fatalf("journal kept %v", ps)
	}
}

// workerPID waits for the worker to be ready and returns its pid.
func readLine(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	type res struct {
		s   string
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := r.ReadString('\n')
		ch <- res{s, err}
	}()
	select {
	case got := <-ch:
		if got.err != nil {
			t.Fatalf("read: %v", got.err)
		}
		return strings.TrimSpace(got.s)
	case <-time.After(20 * time.Second):
		t.Fatal("nothing came through the held port")
		return ""
	}
}

// A worker that dies hands its port back through the supervisor: the next
// worker gets the same fd (it writes into the same pipe) and state, and
// the supervisor counts the restart.
func TestCrashRestartHandsPortsBack(t *testing.T) {
	leaktest.Check(t)
	fifo := filepath.Join(t.TempDir(), "port")
	if err := syscallMkfifo(fifo); err != nil {
		t.Fatal(err)
	}
	t.Setenv(fifoEnv, fifo)
	r, err := os.OpenFile(fifo, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h := startSupervisor(t, "hold", nil)
	var pid int
	poll.UntilNil(t, 20*time.Second, "port held and journalled", func() error {
		ps, err := ReadJournal(h.dir)
		if err != nil || len(ps) != 1 || ps[0].ID != "c-1" {
			return fmt.Errorf("journal %v %v", ps, err)
		}
		pid = workerPIDFromLog(h.logs(), 1)
		if pid == 0 || !strings.Contains(h.logs(), `msg="worker ready"`) {
			return fmt.Errorf("no worker ready yet")
		}
		return nil
	})
	if err := syscallKill(pid); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(r)
	if got := readLine(t, br); got != "restored c-1 10.240.0.7 restarts=1" {
		t.Fatalf("the restarted worker wrote %q", got)
	}
	if !strings.Contains(h.logs(), "worker died; restarting it at once") {
		t.Fatalf("no restart logged")
	}
	// The next one too: a healthy-again worker is restarted at once.
	pid2 := workerPIDFromLog(h.logs(), 2)
	if pid2 == 0 || pid2 == pid {
		t.Fatalf("second worker pid %d (first %d)", pid2, pid)
	}
	if err := syscallKill(pid2); err != nil {
		t.Fatal(err)
	}
	if got := readLine(t, br); got != "restored c-1 10.240.0.7 restarts=2" {
		t.Fatalf("the third worker wrote %q", got)
	}
	if ps, _ := ReadJournal(h.dir); len(ps) != 1 {
		t.Fatalf("journal after restarts: %v", ps)
	}
}

// workerPIDFromLog returns the pid of the n-th "worker started" line.
func workerPIDFromLog(log string, n int) int {
	seen := 0
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, `msg="worker started"`) {
			continue
		}
		if seen++; seen == n {
			var pid int
			i := strings.Index(l, " pid=")
			if i < 0 {
				return 0
			}
			fmt.Sscanf(l[i+5:], "%d", &pid)
			return pid
		}
	}
	return 0
}

// Workers that die at once are restarted with a growing backoff.
func TestCrashLoopBacksOff(t *testing.T) {
	leaktest.Check(t)
	saved := backoffMin
	backoffMin = 20 * time.Millisecond
	t.Cleanup(func() { backoffMin = saved })
	h := startSupervisor(t, "dieagain", nil)
	var pid int
	poll.UntilNil(t, 20*time.Second, "first worker ready", func() error {
		if pid = workerPIDFromLog(h.logs(), 1); pid == 0 || !strings.Contains(h.logs(), `msg="worker ready"`) {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	if err := syscallKill(pid); err != nil {
		t.Fatal(err)
	}
	poll.UntilNil(t, 20*time.Second, "a crash loop", func() error {
		if n := strings.Count(h.logs(), "worker crash loop"); n < 3 {
			return fmt.Errorf("%d crash-loop lines", n)
		}
		return nil
	})
	var backoffs []string
	for _, l := range strings.Split(h.logs(), "\n") {
		if i := strings.Index(l, "backoff="); i >= 0 && strings.Contains(l, "worker crash loop") {
			backoffs = append(backoffs, l[i+len("backoff="):])
		}
	}
	if len(backoffs) < 3 || backoffs[0] != "20ms" || backoffs[1] != "40ms" || backoffs[2] != "80ms" {
		t.Fatalf("backoffs %v, want 20ms 40ms 80ms ...", backoffs)
	}
}

// An upgrade to a binary that fails leaves the old worker in place and
// says why; one to a working binary replaces it and hands the port over.
func TestUpgrade(t *testing.T) {
	leaktest.Check(t)
	fifo := filepath.Join(t.TempDir(), "port")
	if err := syscallMkfifo(fifo); err != nil {
		t.Fatal(err)
	}
	t.Setenv(fifoEnv, fifo)
	r, err := os.OpenFile(fifo, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	upgrades := make(chan string)
	h := startSupervisor(t, "hold", upgrades)
	poll.UntilNil(t, 20*time.Second, "port held", func() error {
		if ps, _ := ReadJournal(h.dir); len(ps) != 1 {
			return fmt.Errorf("journal %v", ps)
		}
		return nil
	})
	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.WriteFile(bad, []byte("#!/bin/sh\necho broken >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	upgrades <- bad
	poll.UntilNil(t, 20*time.Second, "failed upgrade reported", func() error {
		if !strings.Contains(h.logs(), "upgrade failed; the old worker keeps running") {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	first := workerPIDFromLog(h.logs(), 1)
	if err := syscallSignal0(first); err != nil {
		t.Fatalf("old worker %d gone after a failed upgrade: %v", first, err)
	}
	exe, _ := os.Executable()
	upgrades <- exe
	br := bufio.NewReader(r)
	if got := readLine(t, br); got != "restored c-1 10.240.0.7 restarts=0" {
		t.Fatalf("the new worker wrote %q", got)
	}
	poll.UntilNil(t, 20*time.Second, "upgrade done", func() error {
		if !strings.Contains(h.logs(), `msg=upgraded`) {
			return fmt.Errorf("not yet")
		}
		return nil
	})
}

// The worker's end of the link: the handover, a stop from the supervisor,
// the end of the link, and Close, which leaves no goroutine behind.
func TestLink(t *testing.T) {
	leaktest.Check(t)
	mine, theirs, err := socketpair()
	if err != nil {
		t.Fatal(err)
	}
	defer mine.Close()
	fd, err := syscallDup(int(theirs.Fd()))
	theirs.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(Env, strconv.Itoa(fd))
	link, err := FromEnv()
	if err != nil || link == nil {
		t.Fatalf("FromEnv: %v %v", link, err)
	}
	if os.Getenv(Env) != "" {
		t.Error("FromEnv left the variable for child processes")
	}
	if err := send(mine, &message{Op: opHandover, Handover: &Handover{Restarts: 2, SupervisorPID: 7}}, nil); err != nil {
		t.Fatal(err)
	}
	ports, h, err := link.Handover()
	if err != nil || len(ports) != 0 || h.Restarts != 2 || link.Info().SupervisorPID != 7 {
		t.Fatalf("handover: %v %+v %v", ports, h, err)
	}
	link.Start()
	if err := send(mine, &message{Op: opStop}, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-link.Stopped():
	case <-time.After(10 * time.Second):
		t.Fatal("stop not seen")
	}
	mine.Close()
	select {
	case <-link.Gone():
	case <-time.After(10 * time.Second):
		t.Fatal("the end of the link not seen")
	}
	if err := link.Hold(Port{Container: control.Container{ID: "c-1"}}, os.Stdin); err == nil {
		t.Error("Hold succeeded without a supervisor")
	}
	if err := link.Close(); err != nil {
		t.Error(err)
	}
}
