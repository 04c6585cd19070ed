//go:build e2e

package e2e

import (
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestCommands: containers, detach and status agree with what attach did,
// in JSON and text.
func TestCommands(t *testing.T) {
	need(t)
	d := startDaemon(t)
	if cs := d.containers(t); len(cs) != 0 {
		t.Fatalf("containers --json of a fresh daemon: %+v, want []", cs)
	}
	if r := d.mustCLI(t, "containers", "--json"); strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("containers --json with no containers: %q, want []", r.stdout)
	}

	pn, app := newID("pn"), newID("ap")
	a, b, c := newNetns(t), newNetns(t), newNetns(t)
	ca := d.attach(t, a, pn, app, "web")
	cb := d.attach(t, b, pn, app, "web")
	cc := d.attach(t, c, pn, app, "db", "--number", "7", "--ip", "10.240.2.17")
	if ca.Number == cb.Number {
		t.Errorf("two web containers of one app share number %d", ca.Number)
	}
	if cc.Number != 7 || cc.IP != "10.240.2.17" {
		t.Errorf("--number 7 --ip 10.240.2.17 gave number %d ip %s", cc.Number, cc.IP)
	}
	for _, x := range []struct {
		ns *netns
		c  container
	}{{a, ca}, {b, cb}, {c, cc}} {
		checkConfigured(t, x.ns, x.c)
	}

	t.Run("containers json", func(t *testing.T) {
		got := d.containers(t)
		want := []container{ca, cb, cc}
		if len(got) != len(want) {
			t.Fatalf("containers --json lists %d, want %d: %+v", len(got), len(want), got)
		}
		for _, w := range want {
			i := slices.IndexFunc(got, func(g container) bool { return g.ID == w.ID })
			if i < 0 {
				t.Errorf("container %s missing from the list", w.ID)
				continue
			}
			g := got[i]
			if g.IP != w.IP || g.Network != w.Network || g.App != w.App || g.Type != w.Type ||
				g.Number != w.Number || g.Node != w.Node || g.Interface != w.Interface ||
				g.MTU != w.MTU || !slices.Equal(g.Names, w.Names) {
				t.Errorf("containers --json entry differs from attach --json:\n got %+v\nwant %+v", g, w)
			}
		}
	})

	t.Run("containers text", func(t *testing.T) {
		r := d.mustCLI(t, "containers")
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if got := strings.Join(strings.Fields(lines[0]), " "); got != "ID NETWORK APP TYPE NUMBER IP NODE" {
			t.Errorf("containers header %q, want ID NETWORK APP TYPE NUMBER IP NODE", lines[0])
		}
		if len(lines) != 4 {
			t.Fatalf("containers prints %d lines, want header + 3:\n%s", len(lines), r.stdout)
		}
		for _, c := range []container{ca, cb, cc} {
			if !strings.Contains(r.stdout, c.ID) || !strings.Contains(r.stdout, c.IP) {
				t.Errorf("containers text lacks %s / %s:\n%s", c.ID, c.IP, r.stdout)
			}
		}
	})

	t.Run("VROUTER_CONTROL", func(t *testing.T) {
		r := runCLI(t, nil, []string{"VROUTER_CONTROL=" + d.sock}, "containers", "--json")
		if r.code != 0 || !strings.Contains(r.stdout, ca.ID) {
			t.Errorf("containers with $VROUTER_CONTROL: %v", r)
		}
	})

	t.Run("attach text", func(t *testing.T) {
		n := newNetns(t)
		r := d.mustCLI(t, "attach", "--netns", n.path, "--network", pn, "--app", app, "--type", "web", "--number", "9")
		checkAttachText(t, r.stdout, expectedNames(pn, app, "web", 9))
		id := textField(r.stdout, "id")
		if r := d.mustCLI(t, "detach", id); strings.TrimSpace(r.stdout) != "detached "+id {
			t.Errorf("detach prints %q, want %q", r.stdout, "detached "+id)
		}
		n.waitLinkGone(t, defaultIfname, 10*time.Second)
	})

	t.Run("status", func(t *testing.T) {
		s := d.status(t)
		if s.Node != nodeName || s.Control != d.sock || s.MTU != defaultMTU {
			t.Errorf("status node/control/mtu = %q/%q/%d, want %q/%q/%d", s.Node, s.Control, s.MTU, nodeName, d.sock, defaultMTU)
		}
		if s.Containers != 3 || s.Networks != 1 {
			t.Errorf("status containers/networks = %d/%d, want 3/1", s.Containers, s.Networks)
		}
		if s.Version == "" || s.UptimeSeconds < 0 {
			t.Errorf("status version %q uptime %v", s.Version, s.UptimeSeconds)
		}
		if r := d.mustCLI(t, "status"); strings.TrimSpace(r.stdout) == "" || !strings.Contains(r.stdout, nodeName) {
			t.Errorf("status text does not name the node:\n%s", r.stdout)
		}
	})

	t.Run("detach", func(t *testing.T) {
		r := d.mustCLI(t, "detach", cb.ID)
		if strings.TrimSpace(r.stdout) != "detached "+cb.ID {
			t.Errorf("detach prints %q, want %q", r.stdout, "detached "+cb.ID)
		}
		b.waitLinkGone(t, defaultIfname, 10*time.Second)
		got := d.containers(t)
		if len(got) != 2 || slices.ContainsFunc(got, func(c container) bool { return c.ID == cb.ID }) {
			t.Errorf("after detach %s: containers %+v", cb.ID, got)
		}
		if s := d.status(t); s.Containers != 2 {
			t.Errorf("status containers = %d after detach, want 2", s.Containers)
		}
		expectError(t, d.cli(t, "detach", cb.ID), 1, "no container "+cb.ID)
		// The netns is free again: a new attach there works.
		again := d.attach(t, b, pn, app, "web")
		checkConfigured(t, b, again)
		mustPing(t, a, again.IP)
	})
}

var textLine = regexp.MustCompile(`^([a-z_]+):\s+(\S.*)$`)

// textField returns the value of "key: value" in attach's text output.
func textField(out, key string) string {
	for _, line := range strings.Split(out, "\n") {
		if m := textLine.FindStringSubmatch(line); m != nil && m[1] == key {
			return strings.TrimSpace(m[2])
		}
	}
	return ""
}

// checkAttachText checks attach's text form: id, ip, mtu, resolver, and the
// names one per line, continuation lines indented.
func checkAttachText(t *testing.T, out string, names []string) {
	t.Helper()
	for key, want := range map[string]string{"mtu": "1390", "resolver": resolverAddr} {
		if got := textField(out, key); got != want {
			t.Errorf("attach text %s: %q, want %q\n%s", key, got, want, out)
		}
	}
	for _, key := range []string{"id", "ip"} {
		if textField(out, key) == "" {
			t.Errorf("attach text lacks %s:\n%s", key, out)
		}
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	i := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "names:") })
	if i < 0 || i+len(names) > len(lines) {
		t.Fatalf("attach text: want %d names:\n%s", len(names), out)
	}
	got := []string{strings.TrimSpace(strings.TrimPrefix(lines[i], "names:"))}
	for _, l := range lines[i+1 : i+len(names)] {
		if !strings.HasPrefix(l, " ") {
			t.Errorf("attach text: name continuation line not indented: %q", l)
		}
		got = append(got, strings.TrimSpace(l))
	}
	if !slices.Equal(got, names) {
		t.Errorf("attach text names %q, want %q", got, names)
	}
}
