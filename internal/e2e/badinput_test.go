//go:build e2e

package e2e

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// TestBadInput: every bad request gives one line on stderr starting with
// "vrouter: ", a non-zero exit, and leaves nothing behind: no interface in
// the namespace, no container in the daemon, the existing container intact.
func TestBadInput(t *testing.T) {
	need(t)
	d := startDaemon(t)
	pn, app := newID("pn"), newID("ap")
	occupied, scratch := newNetns(t), newNetns(t)
	first := d.attach(t, occupied, pn, app, "web", "--ip", "10.240.0.5")
	scratchLinks := scratch.linkNames(t)

	notTUN, err := os.CreateTemp(t.TempDir(), "not-a-tun")
	if err != nil {
		t.Fatal(err)
	}
	defer notTUN.Close()
	missingSock := filepath.Join(t.TempDir(), "nodaemon", "control.sock")
	// A socket someone planted in a directory anyone may write to: the
	// client refuses it before connecting (an attach would hand it the
	// TUN's fd), so its listener never sees a connection.
	openDir := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(openDir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(openDir, 0o1777); err != nil {
		t.Fatal(err)
	}
	plantedSock := filepath.Join(openDir, "control.sock")
	planted, err := net.Listen("unixpacket", plantedSock)
	if err != nil {
		t.Fatal(err)
	}
	var plantedConns atomic.Int32
	var plantedWG sync.WaitGroup
	plantedWG.Go(func() {
		for {
			c, err := planted.Accept()
			if err != nil {
				return
			}
			plantedConns.Add(1)
			c.Close()
		}
	})
	defer func() {
		planted.Close()
		plantedWG.Wait()
		if n := plantedConns.Load(); n != 0 {
			t.Errorf("the planted socket got %d connections", n)
		}
	}()
	// `run` with bad flags must stop before touching this dir.
	runDir := filepath.Join(t.TempDir(), "state")
	run := func(extra ...string) []string {
		return append([]string{"run", "--state-dir", runDir, "--control", filepath.Join(runDir, "c.sock")}, extra...)
	}

	// attach builds an attach command line into scratch, with overrides.
	attach := func(kv ...string) []string {
		opts := map[string]string{"--netns": scratch.path, "--network": pn, "--app": app, "--type": "web", "--control": d.sock}
		var extra []string
		for i := 0; i+1 < len(kv); i += 2 {
			if _, ok := opts[kv[i]]; ok {
				opts[kv[i]] = kv[i+1]
			} else {
				extra = append(extra, kv[i], kv[i+1])
			}
		}
		args := []string{"attach"}
		for _, k := range []string{"--control", "--netns", "--network", "--app", "--type"} {
			if opts[k] != "-" {
				args = append(args, k, opts[k])
			}
		}
		return append(args, extra...)
	}
	cases := []struct {
		name  string
		args  []string
		files []*os.File
		code  int    // -1: any non-zero
		want  string // substring of the error line
	}{
		{"unknown flag", append(attach(), "--bogus"), nil, 2, "bogus"},
		{"unknown subcommand", []string{"frobnicate"}, nil, 2, "frobnicate"},
		{"missing network", attach("--network", "-"), nil, 2, "network"},
		{"missing netns and fd", attach("--netns", "-"), nil, 2, ""},
		{"malformed network", attach("--network", "pn-1234"), nil, 2, "network"},
		{"network upper-case uuid", attach("--network", strings.ToUpper(pn[:3])+strings.ToUpper(pn[3:])), nil, 2, "network"},
		{"network without prefix", attach("--network", pn[3:]), nil, 2, "network"},
		{"app id as network", attach("--network", app), nil, 2, "network"},
		{"malformed app", attach("--app", "ap-zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"), nil, 2, "app"},
		{"type upper-case", attach("--type", "Web"), nil, 2, "type"},
		{"type leading digit", attach("--type", "1web"), nil, 2, "type"},
		{"type underscore", attach("--type", "we_b"), nil, 2, "type"},
		{"type too long", attach("--type", "a"+strings.Repeat("b", 63)), nil, 2, "type"},
		{"ip above range", attach("--ip", "10.240.4.1"), nil, 2, "10.240.4.1"},
		{"ip network address", attach("--ip", "10.240.0.0"), nil, 2, "10.240.0.0"},
		{"ip broadcast address", attach("--ip", "10.240.3.255"), nil, 2, "10.240.3.255"},
		{"ip outside", attach("--ip", "192.0.2.1"), nil, 2, "192.0.2.1"},
		{"ip garbage", attach("--ip", "ten"), nil, 2, "ten"},
		{"ip taken", attach("--ip", first.IP), nil, 1, "in use"},
		{"netns missing", attach("--netns", "/run/netns/vre2e-"+runID+"-missing"), nil, 1, "vre2e-" + runID + "-missing"},
		{"daemon not running", attach("--control", missingSock), nil, 1, "daemon not running: no control socket at " + missingSock},
		{"containers without daemon", []string{"containers", "--control", missingSock}, nil, 1, "daemon not running: no control socket at " + missingSock},
		{"status without daemon", []string{"status", "--control", missingSock}, nil, 1, "daemon not running: no control socket at " + missingSock},
		{"detach without daemon", []string{"detach", "--control", missingSock, "c-000000000000"}, nil, 1, "daemon not running: no control socket at " + missingSock},
		{"attach to a planted socket", attach("--control", plantedSock), nil, 1, "others may write"},
		{"status from a planted socket", []string{"status", "--control", plantedSock}, nil, 1, "others may write"},
		{"same netns twice", attach("--netns", occupied.path), nil, 1, "already attached"},
		{"same netns twice, other ifname", attach("--netns", occupied.path, "--ifname", "vr1"), nil, 1, "already attached"},
		{"same netns twice, other network", attach("--netns", occupied.path, "--network", newID("pn")), nil, 1, "already attached"},
		// The namespace takes the TUN here (no default route wanted): the
		// daemon refuses it, by the namespace's key.
		{"same netns twice, pn-only beside it", attach("--netns", occupied.path, "--mode", "pn-only", "--ifname", "vr2"), nil, 1, "already attached"},
		{"fd not a TUN", attach("--netns", "-", "--fd", "3"), []*os.File{notTUN}, 1, "not a TUN"},
		{"fd not open", attach("--netns", "-", "--fd", "9"), nil, -1, ""},
		{"number negative", attach("--number", "-3"), nil, 2, "number"},
		{"run unknown flag", run("--bogus"), nil, 2, "bogus"},
		{"run bad mtu", run("--mtu", "abc"), nil, 2, "mtu"},
		{"run bad log level", run("--log-level", "loud"), nil, 2, "loud"},
		{"detach unknown", []string{"detach", "--control", d.sock, "c-000000000000"}, nil, 1, "no container c-000000000000"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, tc.files, nil, tc.args...)
			expectError(t, r, tc.code, tc.want)
			// The contract gives this message word for word.
			if want := "vrouter: daemon not running: no control socket at " + missingSock; strings.Contains(tc.want, "daemon not running") && strings.TrimSpace(r.stderr) != want {
				t.Errorf("contract: stderr %q, want exactly %q", strings.TrimSpace(r.stderr), want)
			}
			t.Logf("exit %d: %s", r.code, strings.TrimSpace(r.stderr))
			if got := scratch.linkNames(t); !slices.Equal(got, scratchLinks) {
				t.Errorf("left behind in the namespace: links %v, before %v", got, scratchLinks)
			}
			if _, ok := occupied.link(t, defaultIfname); !ok {
				t.Fatalf("the existing container's %s vanished", defaultIfname)
			}
			if _, ok := occupied.link(t, "vr2"); ok {
				t.Errorf("a refused attach left vr2 in the attached namespace")
			}
			cs := d.containers(t)
			if len(cs) != 1 || cs[0].ID != first.ID {
				t.Fatalf("daemon containers changed: %+v", cs)
			}
		})
	}

	if _, err := os.Stat(runDir); err == nil {
		t.Errorf("run with bad flags created its state dir %s", runDir)
	}

	// The daemon survived all that and still forwards.
	other := newNetns(t)
	d.attach(t, other, pn, app, "web")
	mustPing(t, other, first.IP)
}
