//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/poll"
)

// fakeSystemd plays systemd's part for `vrouter run` under NOTIFY_SOCKET:
// it receives the notifications, keeps the fds sent with FDSTORE=1 by
// FDNAME, drops them on FDSTOREREMOVE=1, and starts the daemon with the
// stored fds passed back as LISTEN_FDS (systemd itself is not on the test
// machines).
type fakeSystemd struct {
	conn *net.UnixConn
	path string
	mu   sync.Mutex
	msgs []string
	fds  map[string]*os.File
	done chan struct{}
}

func newFakeSystemd(t *testing.T) *fakeSystemd {
	t.Helper()
	dir := newStateDir(t) // nobody can reach the socket inside
	path := filepath.Join(dir, "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, h.uid, h.gid); err != nil {
		t.Fatal(err)
	}
	sd := &fakeSystemd{conn: c, path: path, fds: make(map[string]*os.File), done: make(chan struct{})}
	go sd.serve()
	t.Cleanup(func() {
		c.Close()
		<-sd.done
		for _, f := range sd.fds {
			f.Close()
		}
	})
	return sd
}

func (sd *fakeSystemd) serve() {
	defer close(sd.done)
	buf, oob := make([]byte, 4096), make([]byte, syscall.CmsgSpace(4*4))
	for {
		n, oobn, _, _, err := sd.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		var files []*os.File
		if cms, err := syscall.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, cm := range cms {
				fds, _ := syscall.ParseUnixRights(&cm)
				for _, fd := range fds {
					files = append(files, os.NewFile(uintptr(fd), "stored"))
				}
			}
		}
		msg := string(buf[:n])
		kv := make(map[string]string)
		for _, l := range strings.Split(msg, "\n") {
			if k, v, ok := strings.Cut(l, "="); ok {
				kv[k] = v
			}
		}
		sd.mu.Lock()
		sd.msgs = append(sd.msgs, msg)
		switch {
		case kv["FDSTORE"] == "1" && len(files) == 1:
			if old := sd.fds[kv["FDNAME"]]; old != nil {
				old.Close()
			}
			sd.fds[kv["FDNAME"]] = files[0]
			files = nil
		case kv["FDSTOREREMOVE"] == "1":
			if f := sd.fds[kv["FDNAME"]]; f != nil {
				f.Close()
				delete(sd.fds, kv["FDNAME"])
			}
		}
		sd.mu.Unlock()
		for _, f := range files {
			f.Close()
		}
	}
}

func (sd *fakeSystemd) stored() []string {
	sd.mu.Lock()
	defer sd.mu.Unlock()
	var out []string
	for n := range sd.fds {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func (sd *fakeSystemd) count(msg string) int {
	sd.mu.Lock()
	defer sd.mu.Unlock()
	n := 0
	for _, m := range sd.msgs {
		if m == msg {
			n++
		}
	}
	return n
}

// start runs the daemon as systemd would: NOTIFY_SOCKET, and the stored
// fds as 3, 4, … with LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID (the
// shell's pid, which setpriv and vrouter keep: both exec in place).
func (sd *fakeSystemd) start(t *testing.T, dir string) *daemon {
	t.Helper()
	d := &daemon{dir: dir, sock: filepath.Join(dir, "control.sock"), log: &syncBuffer{}, done: make(chan struct{}), stopWait: stopTimeout}
	names := sd.stored()
	sd.mu.Lock()
	var files []*os.File
	for _, n := range names {
		files = append(files, sd.fds[n])
	}
	sd.mu.Unlock()
	env := []string{"NOTIFY_SOCKET=" + sd.path}
	script := "exec \"$@\""
	if len(names) > 0 {
		env = append(env, fmt.Sprintf("LISTEN_FDS=%d", len(names)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
		script = "LISTEN_PID=$$ exec \"$@\""
	}
	args := []string{"-c", script, "sh", "setpriv", "--reuid=" + daemonUser, "--regid=" + daemonGroup, "--clear-groups", "--pdeathsig", "KILL",
		h.bin, "run", "--state-dir", dir, "--control", d.sock, "--name", nodeName,
		"--gossip", "127.0.0.1:0", "--listen", "127.0.0.1:0", "--dns-upstream", h.upstream.addr}
	d.cmd = exec.Command("sh", args...)
	d.cmd.Env = append(os.Environ(), env...)
	d.cmd.ExtraFiles = files
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	d.cmd.WaitDelay = 5 * time.Second
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.waitErr = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		d.stop(t)
		if t.Failed() {
			t.Logf("daemon output:\n%s", d.log.String())
		}
	})
	d.waitRunning(t)
	return d
}

// TestSystemdFDStore: under NOTIFY_SOCKET the daemon starts no
// supervisor, sends READY=1, stores each port's fd in the fd store
// (FDSTORE=1, FDNAME=id) and removes it on detach; killed and started
// again with the stored fds, it restores the ports as they were: same ids
// and addresses, traffic flows, nothing attached again. A journalled port
// whose fd does not come back is reported lost.
func TestSystemdFDStore(t *testing.T) {
	need(t)
	sd := newFakeSystemd(t)
	dir := newStateDir(t)
	d := sd.start(t, dir)
	if sd.count("READY=1") != 1 {
		t.Errorf("no READY=1")
	}
	if st := d.supStatusRaw(t); st.SupervisorPID != 0 || st.Pid != d.pid() {
		t.Errorf("under systemd: pid %d supervisor_pid %d (process %d)", st.Pid, st.SupervisorPID, d.pid())
	}
	pn, app := newID("pn"), newID("ap")
	a, b, c := newNetns(t), newNetns(t), newNetns(t)
	ca := d.attach(t, a, pn, app, "web")
	cb := d.attach(t, b, pn, app, "web")
	cc := d.attach(t, c, pn, app, "web")
	mustPing(t, a, cb.IP)
	d.mustCLI(t, "detach", cc.ID)
	poll.UntilNil(t, 10*time.Second, "fd store holds the two attached ports", func() error {
		if got, want := sd.stored(), sortedIDs(ca.ID, cb.ID); !slices.Equal(got, want) {
			return fmt.Errorf("stored %v, want %v", got, want)
		}
		return nil
	})
	before := containerSet(t, d)
	d.kill(t)
	if _, ok := a.link(t, defaultIfname); !ok {
		t.Fatalf("%s disappeared with the daemon although the fd store holds it", defaultIfname)
	}
	d2 := sd.start(t, dir)
	if got := containerSet(t, d2); !slices.Equal(got, before) {
		t.Errorf("containers after the restart:\n%v\nwant\n%v", got, before)
	}
	mustPing(t, a, cb.IP)
	if n := strings.Count(d2.log.String(), "msg=restored"); n != 2 {
		t.Errorf("%d ports restored, want 2", n)
	}

	// b's fd does not come back: its port is reported lost, a's restored.
	d2.kill(t)
	sd.mu.Lock()
	sd.fds[cb.ID].Close()
	delete(sd.fds, cb.ID)
	sd.mu.Unlock()
	d3 := sd.start(t, dir)
	if !strings.Contains(d3.log.String(), "port lost: systemd's fd store did not give its fd back") || !strings.Contains(d3.log.String(), cb.ID) {
		t.Errorf("the lost port is not reported:\n%s", d3.log.String())
	}
	if cs := d3.containers(t); len(cs) != 1 || cs[0].ID != ca.ID {
		t.Errorf("containers after losing one fd: %+v", cs)
	}
}

func sortedIDs(ids ...string) []string {
	slices.Sort(ids)
	return ids
}

// supStatusRaw is supStatus without requiring the supervisor object.
func (d *daemon) supStatusRaw(t *testing.T) supStatus {
	t.Helper()
	var s supStatus
	if err := json.Unmarshal([]byte(d.mustCLI(t, "status", "--json").stdout), &s); err != nil {
		t.Fatal(err)
	}
	return s
}
