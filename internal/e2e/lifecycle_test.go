//go:build e2e

package e2e

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/poll"
)

// TestDaemonLifecycle: the daemon runs as nobody without capabilities, owns
// a 0700 state dir and a 0600 socket, refuses a second daemon on its socket,
// and on SIGTERM closes every port, removes the socket and exits 0.
func TestDaemonLifecycle(t *testing.T) {
	need(t)
	d := startDaemon(t)

	t.Run("unprivileged", func(t *testing.T) {
		st := procStatus(t, d.pid())
		want := fmt.Sprintf("%d\t%d\t%d\t%d", h.uid, h.uid, h.uid, h.uid)
		if st["Uid"] != want {
			t.Errorf("daemon Uid %q, want %q (%s)", st["Uid"], want, daemonUser)
		}
		want = fmt.Sprintf("%d\t%d\t%d\t%d", h.gid, h.gid, h.gid, h.gid)
		if st["Gid"] != want {
			t.Errorf("daemon Gid %q, want %q (%s)", st["Gid"], want, daemonGroup)
		}
		if st["Groups"] != "" {
			t.Errorf("daemon supplementary groups %q, want none", st["Groups"])
		}
		for _, k := range []string{"CapEff", "CapPrm", "CapAmb"} {
			if v, err := strconv.ParseUint(st[k], 16, 64); err != nil || v != 0 {
				t.Errorf("daemon %s = %q, want 0", k, st[k])
			}
		}
	})

	t.Run("files", func(t *testing.T) {
		checkOwnedMode(t, d.dir, fs.ModeDir|0o700)
		checkOwnedMode(t, d.sock, fs.ModeSocket|0o600)
	})

	t.Run("second daemon refused", func(t *testing.T) {
		d2 := launchDaemon(t, d.dir)
		code, ok := d2.waitExit(startTimeout)
		if !ok {
			t.Fatalf("a second daemon on a live socket is still running after %v:\n%s", startTimeout, d2.log.String())
		}
		if code != 1 {
			t.Errorf("second daemon exit %d, want 1:\n%s", code, d2.log.String())
		}
		if !hasLinePrefix(d2.log.String(), "vrouter: ") {
			t.Errorf("second daemon printed no %q line:\n%s", "vrouter: ", d2.log.String())
		}
		if r := d.cli(t, "status", "--json"); r.code != 0 {
			t.Errorf("first daemon no longer answers after the second was refused: %v", r)
		}
	})

	t.Run("SIGTERM", func(t *testing.T) {
		pn, app := newID("pn"), newID("ap")
		a := newNetns(t)
		d.attach(t, a, pn, app, "web")
		if code := d.terminate(t); code != 0 {
			t.Errorf("daemon exit %d after SIGTERM, want 0:\n%s", code, d.log.String())
		}
		if _, err := os.Stat(d.sock); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("control socket still there after SIGTERM: %v", err)
		}
		a.waitLinkGone(t, defaultIfname, 10*time.Second)
	})
}

// TestDaemonKilled: when the daemon dies (SIGKILL), also in the middle of
// an attach, the TUNs vanish from the namespaces and the client fails with
// one line; a new daemon replaces the stale socket and can attach the same
// namespaces again.
func TestDaemonKilled(t *testing.T) {
	need(t)
	d := startDaemon(t)
	pn, app := newID("pn"), newID("ap")
	a, b, c := newNetns(t), newNetns(t), newNetns(t)
	d.attach(t, a, pn, app, "web")
	d.attach(t, b, pn, app, "web")

	// Freeze the daemon so that the next attach is caught half-way: the
	// client has connected (the listen backlog accepts it) and waits.
	if err := d.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP daemon: %v", err)
	}
	pending := make(chan result, 1)
	go func() {
		r, err := execCLI(nil, nil, "attach", "--control", d.sock, "--netns", c.path, "--network", pn, "--app", app, "--type", "web")
		if err != nil {
			r.code, r.stderr = -1, err.Error()
		}
		pending <- r
	}()
	// The client may create the TUN before or after it hears from the
	// daemon; give it a moment to get as far as it can.
	created := poll.Within(3*time.Second, func() bool { _, ok := c.link(t, defaultIfname); return ok })
	t.Logf("mid-attach: client created %s before the daemon answered: %v", defaultIfname, created)
	d.kill(t)

	var r result
	select {
	case r = <-pending:
	case <-time.After(cmdTimeout + 5*time.Second):
		t.Fatal("attach did not return after the daemon was killed")
	}
	expectError(t, r, 1, "")
	t.Logf("attach interrupted by SIGKILL: exit %d: %s", r.code, strings.TrimSpace(r.stderr))
	for _, n := range []*netns{a, b, c} {
		n.waitLinkGone(t, defaultIfname, 10*time.Second)
	}

	stale := d.cli(t, "containers", "--json")
	expectError(t, stale, 1, "")
	t.Logf("client against the dead daemon's socket: exit %d: %s", stale.code, strings.TrimSpace(stale.stderr))

	d2 := launchDaemon(t, d.dir)
	d2.waitRunning(t)
	if cs := d2.containers(t); len(cs) != 0 {
		t.Errorf("restarted daemon lists %+v, want none", cs)
	}
	ca := d2.attach(t, a, pn, app, "web")
	cc := d2.attach(t, c, pn, app, "web")
	mustPing(t, a, cc.IP)
	mustPing(t, c, ca.IP)
}

// procStatus reads /proc/PID/status into key → value.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("daemon status: %v", err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// checkOwnedMode checks that path belongs to the daemon user and has mode.
func checkOwnedMode(t *testing.T, path string, mode fs.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != mode {
		t.Errorf("%s: mode %v, want %v", path, fi.Mode(), mode)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if int(st.Uid) != h.uid {
		t.Errorf("%s: owner uid %d, want %d (%s)", path, st.Uid, h.uid, daemonUser)
	}
}

func hasLinePrefix(s, prefix string) bool {
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, prefix) {
			return true
		}
	}
	return false
}
