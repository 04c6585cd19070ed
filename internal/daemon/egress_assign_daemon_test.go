package daemon

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/vrouter/vrouter/internal/control"
)

// TestEgressRequestValidation: bad egress and gateway requests get
// "invalid" or "not_found" from a single node.
func TestEgressRequestValidation(t *testing.T) {
	td := startDaemon(t)
	for _, tc := range []struct {
		action, app string
		code        control.Code
	}{
		{"enable", "", "invalid"},
		{"disable", "", "invalid"},
		{"enable", "ap-1", "invalid"},
		{"show", "ap-1", "invalid"},
		{"frob", egressAppA, "invalid"},
		{"disable", egressAppA, "not_found"},
		{"show", egressAppA, "not_found"},
		{"enable", egressAppA, "unavailable"},
	} {
		if _, err := td.egressCall(t, tc.action, tc.app); errCode(err) != tc.code {
			t.Errorf("egress %s %q: %v, want code %s", tc.action, tc.app, err, tc.code)
		}
	}
	if rows := td.showRows(t); len(rows) != 0 {
		t.Errorf("show = %v, want none", rows)
	}
	var raw json.RawMessage
	if err := td.call(t, &control.Request{Op: "egress", Egress: &control.EgressRequest{Action: "show"}}, false, &raw); err != nil || string(raw) != "[]" {
		t.Errorf("show JSON = %s, %v; want []", raw, err)
	}
	if _, err := td.gatewayCall(t, "drain"); errCode(err) != "invalid" {
		t.Errorf("drain on a worker: %v, want invalid", err)
	}
	if _, err := td.gatewayCall(t, "maintain"); errCode(err) != "invalid" {
		t.Errorf("unknown gateway action: %v, want invalid", err)
	}
	if td.egressTargets(egressAppA) != nil || len(td.localEgress()) != 0 {
		t.Errorf("a node without assignments has targets or local egress")
	}
}

// TestEgressRestore: a gateway restores its saved assignments and drain
// flag at start, drops (and stops saving) those of IPs it no longer has,
// and sets an unreadable file aside.
func TestEgressRestore(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	saved := egressFile{Draining: true, Assignments: []persistedAssignment{
		{IP: netip.MustParseAddr("127.0.0.2"), App: egressAppA, AssignedAt: assignT0},
		{IP: netip.MustParseAddr("127.0.0.3"), App: egressAppB, AssignedAt: assignT0},
	}}
	b, _ := json.Marshal(saved)
	path := filepath.Join(state, egressFileName)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	td := startDaemonWith(t, func(c *Config) {
		c.StateDir = state
		c.EgressIPs = mustAddrs("127.0.0.2") // 127.0.0.3 was removed
	})
	// Serve restores them (on its own goroutine here), then answers.
	if rows := td.showRows(t); rows[egressAppA] != "127.0.0.2@test-node:draining:primary" || len(rows) != 1 {
		t.Fatalf("show after restore: %v", rows)
	}
	if l := td.localEgress(); len(l) != 1 || l[egressAppA] != netip.MustParseAddr("127.0.0.2") {
		t.Fatalf("local egress after restore: %v", l)
	}
	got, err := readEgressFile(path)
	if err != nil || !got.Draining || len(got.Assignments) != 1 || got.Assignments[0] != saved.Assignments[0] {
		t.Fatalf("saved after restore: %+v, %v", got, err)
	}
	if st, err := td.gatewayCall(t, "undrain"); err != nil || st.Draining {
		t.Fatalf("undrain: %+v, %v", st, err)
	}
	if got, _ := readEgressFile(path); got.Draining {
		t.Fatal("undrain not saved")
	}

	// An unreadable file is set aside, not fatal.
	state2 := filepath.Join(t.TempDir(), "state")
	os.MkdirAll(state2, 0o700)
	os.WriteFile(filepath.Join(state2, egressFileName), []byte("{garbage"), 0o600)
	td2 := startDaemonNoLeakCheck(t, func(c *Config) {
		c.Name, c.StateDir = "other", state2
		c.EgressIPs = mustAddrs("127.0.0.2")
	})
	td2.showRows(t) // served: the restore is done
	if len(td2.localEgress()) != 0 {
		t.Fatalf("assignments from garbage: %v", td2.localEgress())
	}
	if _, err := os.Stat(filepath.Join(state2, egressFileName+".bad")); err != nil {
		t.Fatalf("garbage not set aside: %v", err)
	}
}
