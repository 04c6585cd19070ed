//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/poll"
)

// TestAttachModes: attach --netns --mode pn-only wires a namespace that
// already has a default route and leaves that route alone; full mode (the
// default) still refuses such a namespace.
func TestAttachModes(t *testing.T) {
	need(t)
	d := startDaemon(t)
	network, app := newID("pn"), newID("ap")
	other := newNetns(t)
	peer := d.attach(t, other, network, app, "web")

	ns := newNetns(t)
	withDefaultRoute(t, ns)
	r := d.cli(t, "attach", "--netns", ns.path, "--network", network, "--app", app, "--type", "web", "--json")
	expectError(t, r, 1, "already has a default route")
	onlyLinks(t, ns, "lo", "eth0", "eth0p")

	c := d.attach(t, ns, network, app, "worker", "--mode", "pn-only")
	routes := map[string]string{}
	for _, r := range ns.routes(t) {
		routes[r.Dst] = r.Dev
	}
	if routes["default"] != "eth0" || routes["10.240.0.0/22"] != defaultIfname || routes[resolverAddr] != defaultIfname {
		t.Fatalf("pn-only routes %v: want default on eth0, 10.240.0.0/22 and %s on %s", routes, resolverAddr, defaultIfname)
	}
	mustPing(t, ns, peer.IP)
	wantA(t, ns, "web."+app+"."+network+nameZoneSuffix, peer.IP)
	mustPing(t, other, c.IP)
}

// userNetns is a user and network namespace made by the daemon user with
// `unshare --user --map-root-user --net`, as a rootless engine makes a
// container's: root has nothing to do with it.
type userNetns struct {
	cmd *exec.Cmd
	pid int
}

func newUserNetns(t *testing.T) *userNetns {
	t.Helper()
	// setpriv and unshare exec in place, so the PID is that of sleep,
	// inside the new namespaces.
	cmd := exec.Command("setpriv", "--reuid="+daemonUser, "--regid="+daemonGroup, "--clear-groups", "--pdeathsig", "KILL",
		"unshare", "--user", "--map-root-user", "--net", "sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	u := &userNetns{cmd: cmd, pid: cmd.Process.Pid}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
	})
	self, err := os.Readlink("/proc/self/ns/user")
	if err != nil {
		t.Fatal(err)
	}
	poll.UntilNil(t, 5*time.Second, "unshare's namespaces", func() error {
		got, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", u.pid))
		if err != nil {
			return err
		}
		if got == self {
			return fmt.Errorf("still in the initial user namespace")
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", u.pid))
		if err != nil || !strings.HasSuffix(exe, "/sleep") {
			return fmt.Errorf("not sleeping yet (%s %v)", exe, err)
		}
		return nil
	})
	return u
}

func (u *userNetns) path(kind string) string { return fmt.Sprintf("/proc/%d/ns/%s", u.pid, kind) }

// asOwner runs args as the daemon user inside the namespaces, the way the
// owner of a rootless container reaches it.
func (u *userNetns) asOwner(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	full := append([]string{"--reuid=" + daemonUser, "--regid=" + daemonGroup, "--clear-groups",
		"nsenter", "--user=" + u.path("user"), "--net=" + u.path("net"), "--preserve-credentials"}, args...)
	out, err := exec.CommandContext(ctx, "setpriv", full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("as %s in pid %d's namespaces: %s: %w", daemonUser, u.pid, strings.Join(args, " "), err)
	}
	return string(out), nil
}

// openDevTUN makes /dev/net/tun usable by everyone, as udev's default rule
// does on a standard system (rootless engines, slirp4netns and pasta need
// it too), for the duration of the test. A lock keeps concurrent runs from
// restoring the mode under each other.
func openDevTUN(t *testing.T) {
	t.Helper()
	const dev = "/dev/net/tun"
	lock, err := os.OpenFile("/tmp/vre2e-devtun.lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dev)
	if err != nil {
		t.Fatal(err)
	}
	mode := st.Mode().Perm()
	t.Cleanup(func() {
		if err := os.Chmod(dev, mode); err != nil {
			t.Errorf("restore %s mode %v: %v", dev, mode, err)
		}
		lock.Close()
	})
	if mode&0o006 != 0o006 {
		if err := os.Chmod(dev, 0o666); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRootlessAttach: the daemon user makes a user+network namespace of
// its own and attaches it with attach --userns --netns, as unprivileged as
// the daemon; it reaches a container of the same network attached by root,
// and the other way round.
func TestRootlessAttach(t *testing.T) {
	need(t)
	if _, err := exec.LookPath("nsenter"); err != nil {
		t.Fatalf("nsenter (util-linux): %v", err)
	}
	openDevTUN(t)
	d := startDaemon(t)
	network, app := newID("pn"), newID("ap")
	rootNS := newNetns(t)
	byRoot := d.attach(t, rootNS, network, app, "web")

	u := newUserNetns(t)
	// Without --userns the daemon user cannot enter the namespace.
	args := []string{"--reuid=" + daemonUser, "--regid=" + daemonGroup, "--clear-groups", h.bin,
		"attach", "--control", d.sock, "--netns", u.path("net"), "--network", network, "--app", app, "--type", "worker", "--json"}
	out, err := exec.Command("setpriv", args...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "pass it with --userns") {
		t.Fatalf("attach without --userns as %s: %v %s: want a refusal pointing at --userns", daemonUser, err, out)
	}
	out, err = exec.Command("setpriv", append(args, "--userns", u.path("user"))...).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("attach --userns as %s: %v: %s", daemonUser, err, stderr)
	}
	c := decodeContainer(t, out)
	checkContainer(t, c, network, app, "worker")

	addrs, err := u.asOwner(cmdTimeout, "ip", "-4", "-o", "addr", "show", "dev", defaultIfname)
	if err != nil || !strings.Contains(addrs, c.IP+"/22") {
		t.Fatalf("inside the rootless namespace: %v %s: want %s/22 on %s", err, addrs, c.IP, defaultIfname)
	}
	if out, err := u.asOwner(cmdTimeout, "ping", "-c", "1", "-W", "2", byRoot.IP); err != nil {
		t.Fatalf("rootless → root's container: %v\n%s", err, out)
	}
	mustPing(t, rootNS, c.IP)
	if got := d.containerIPs(t)[network+"/"+c.IP]; got != nodeName {
		t.Fatalf("daemon lists the rootless container as %q", got)
	}

	// The owner detaches it as unprivileged as it attached it. (A TUN's
	// descriptor pins the namespace it was made in, so the daemon cannot
	// see the namespace go: detaching is the engine's job, CNI's DEL.)
	out, err = exec.Command("setpriv", "--reuid="+daemonUser, "--regid="+daemonGroup, "--clear-groups", h.bin, "detach", "--control", d.sock, c.ID).CombinedOutput()
	if err != nil {
		t.Fatalf("detach as %s: %v: %s", daemonUser, err, out)
	}
	if _, ok := d.containerIPs(t)[network+"/"+c.IP]; ok {
		t.Fatal("the rootless container is still listed after detach")
	}
	poll.UntilNil(t, stopTimeout, "the TUN gone from the rootless namespace", func() error {
		out, err := u.asOwner(cmdTimeout, "ip", "-o", "link", "show")
		if err != nil {
			return err
		}
		if strings.Contains(out, defaultIfname+":") {
			return fmt.Errorf("still there: %s", out)
		}
		return nil
	})
}
