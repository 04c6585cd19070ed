package egress

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// FuzzEgressFile: the state file is outside bytes (an operator may edit
// it); its decoder never panics, and what it accepts the gateway can act
// on.
func FuzzEgressFile(f *testing.F) {
	f.Add([]byte(`{"draining":true,"assignments":[{"ip":"127.0.0.2","app":"` + egressAppA + `","assigned_at":"2025-01-01T00:00:00Z"}]}`))
	f.Add([]byte(`{"assignments":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ef, err := decodeStateFile(b)
		if err != nil {
			return
		}
		for _, a := range ef.Assignments {
			if !a.IP.Is4() || a.AssignedAt.IsZero() {
				t.Fatalf("decodeStateFile(%q) accepted %+v", b, a)
			}
		}
	})
}

func TestEgressFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, fileName)
	if f, err := readFile(path); err != nil || len(f.Assignments) != 0 || f.Draining {
		t.Fatalf("missing file: %+v %v", f, err)
	}
	want := stateFile{Draining: true, Assignments: []persistedAssignment{{IP: netip.MustParseAddr("127.0.0.2"), App: egressAppA, AssignedAt: assignT0}}}
	b, _ := json.Marshal(want)
	if err := writeFileAtomic(path, b); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", st.Mode().Perm())
	}
	got, err := readFile(path)
	if err != nil || !got.Draining || len(got.Assignments) != 1 || got.Assignments[0] != want.Assignments[0] {
		t.Fatalf("read back %+v, %v", got, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
	for _, bad := range []string{
		`{"assignments":[{"ip":"127.0.0.2","app":"nope","assigned_at":"2025-01-01T00:00:00Z"}]}`,
		`{"assignments":[],"extra":1}`,
		`{"assignments":[]} {}`,
		`not json`,
	} {
		if _, err := decodeStateFile([]byte(bad)); err == nil {
			t.Errorf("decodeStateFile(%q) accepted", bad)
		}
	}
}
