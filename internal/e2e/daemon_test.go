//go:build e2e

package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/poll"
)

const (
	nodeName       = "e2e-node"
	runningLine    = `msg="vrouter running"`
	startTimeout   = 20 * time.Second
	stopTimeout    = 15 * time.Second
	defaultMTU     = 1390
	resolverAddr   = "169.254.20.10"
	defaultIfname  = "vr0"
	privatePrefix  = 22
	nameZoneSuffix = ".private-network.internal."
)

// daemon is one `vrouter run` process started by a test as the unprivileged
// daemon user. Its cleanup stops it by PID, also when the test fails.
type daemon struct {
	dir  string // state dir, owned by the daemon user, 0700
	sock string // control socket
	cmd  *exec.Cmd
	log  *syncBuffer // stdout and stderr

	// stopWait bounds how long SIGTERM may take; a daemon holding a
	// thousand ports needs longer than the default.
	stopWait time.Duration

	done    chan struct{} // closed when the process has been reaped
	waitErr error         // set before done is closed
}

// newStateDir makes a state dir the daemon user owns. It is not under
// t.TempDir, whose parent only root may traverse.
func newStateDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "vre2e-state-")
	if err != nil {
		t.Fatalf("state dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chown(dir, h.uid, h.gid); err != nil {
		t.Fatalf("chown state dir: %v", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatalf("chmod state dir: %v", err)
	}
	return dir
}

// startDaemon starts a daemon in a fresh state dir and waits until it says
// it is running.
func startDaemon(t *testing.T) *daemon {
	t.Helper()
	d := launchDaemon(t, newStateDir(t))
	d.waitRunning(t)
	return d
}

// launchDaemon starts `vrouter run` in dir as nobody without waiting for it.
func launchDaemon(t *testing.T, dir string, extra ...string) *daemon {
	t.Helper()
	return launchDaemonEnv(t, dir, nil, extra...)
}

// launchDaemonEnv is launchDaemon with variables added to the environment.
func launchDaemonEnv(t *testing.T, dir string, env []string, extra ...string) *daemon {
	t.Helper()
	d := &daemon{
		dir:      dir,
		sock:     filepath.Join(dir, "control.sock"),
		log:      &syncBuffer{},
		done:     make(chan struct{}),
		stopWait: stopTimeout,
	}
	// --pdeathsig: should the test binary die without its cleanups (a
	// -timeout panic), the daemon dies with it instead of running on.
	args := []string{
		"--reuid=" + daemonUser, "--regid=" + daemonGroup, "--clear-groups", "--pdeathsig", "KILL",
		h.bin, "run", "--state-dir", dir, "--control", d.sock, "--name", nodeName,
		// A free loopback port: tests may run daemons side by side, and gossip
		// must not listen beyond this machine.
		"--gossip", "127.0.0.1:0", "--listen", "127.0.0.1:0",
		// Never the host's resolvers: names outside the private zone go to
		// the tier's own fake upstream.
		"--dns-upstream", h.upstream.addr,
	}
	d.cmd = exec.Command("setpriv", append(args, extra...)...)
	d.cmd.Dir = dir
	if env != nil {
		d.cmd.Env = append(os.Environ(), env...)
	}
	d.cmd.Stdout = d.log
	d.cmd.Stderr = d.log
	d.cmd.WaitDelay = 5 * time.Second
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start daemon: %v", err)
	}
	// The reaper goroutine ends when the process does; the cleanup below
	// makes sure it does.
	go func() {
		d.waitErr = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		d.stop(t)
		if t.Failed() {
			t.Logf("daemon pid %d output:\n%s", d.cmd.Process.Pid, d.log.String())
		}
	})
	return d
}

// pid is the supervisor's (setpriv execs in place); the forwarding
// worker's is status's pid.
func (d *daemon) pid() int { return d.cmd.Process.Pid }

// killPID sends SIGKILL to a process the test started (directly or as a
// daemon's worker).
func killPID(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }

func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// waitRunning waits for the log line that the daemon prints once its socket
// listens, and for the socket itself.
func (d *daemon) waitRunning(t *testing.T) {
	t.Helper()
	poll.UntilNil(t, startTimeout, "daemon running", func() error {
		if d.exited() {
			t.Fatalf("daemon exited before running (%v); output:\n%s", d.waitErr, d.log.String())
		}
		if !strings.Contains(d.log.String(), runningLine) {
			return fmt.Errorf("no %s line yet", runningLine)
		}
		if _, err := os.Stat(d.sock); err != nil {
			return err
		}
		return nil
	})
}

// waitExit waits up to timeout for the process to end and returns its exit
// code (-1 when a signal ended it), or false when it still runs.
func (d *daemon) waitExit(timeout time.Duration) (code int, exited bool) {
	select {
	case <-d.done:
	case <-time.After(timeout):
		return 0, false
	}
	return d.cmd.ProcessState.ExitCode(), true
}

// terminate sends SIGTERM and returns the exit code; it fails the test when
// the daemon does not stop within stopWait.
func (d *daemon) terminate(t *testing.T) int {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil && !d.exited() {
		t.Fatalf("SIGTERM daemon: %v", err)
	}
	code, ok := d.waitExit(d.stopWait)
	if !ok {
		t.Fatalf("daemon did not exit within %v of SIGTERM", d.stopWait)
	}
	return code
}

// kill ends the daemon with SIGKILL and reaps it.
func (d *daemon) kill(t *testing.T) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil && !d.exited() {
		t.Fatalf("SIGKILL daemon: %v", err)
	}
	if _, ok := d.waitExit(stopTimeout); !ok {
		t.Fatalf("daemon not reaped within %v of SIGKILL", stopTimeout)
	}
}

// stop ends the daemon whatever state it is in: SIGTERM, then SIGKILL.
func (d *daemon) stop(t *testing.T) {
	if d.exited() {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	if _, ok := d.waitExit(d.stopWait); ok {
		return
	}
	t.Errorf("daemon pid %d ignored SIGTERM for %v; killing it", d.pid(), d.stopWait)
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	if _, ok := d.waitExit(stopTimeout); !ok {
		t.Errorf("daemon pid %d not reaped after SIGKILL", d.pid())
	}
}

// syncBuffer collects a process's output while tests read it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitContains polls until the buffer holds s.
func (b *syncBuffer) waitContains(t *testing.T, timeout time.Duration, what, s string) {
	t.Helper()
	poll.UntilNil(t, timeout, what, func() error {
		if strings.Contains(b.String(), s) {
			return nil
		}
		return errors.New("got " + fmt.Sprintf("%q", b.String()))
	})
}
