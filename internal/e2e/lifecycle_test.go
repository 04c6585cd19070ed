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
