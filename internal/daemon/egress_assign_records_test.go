package daemon

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseEgressRecords(t *testing.T) {
	good, _ := json.Marshal(eipRecord{App: egressAppA, AssignedAt: assignT0})
	if ip, rec, err := parseEIP("eip/127.0.0.2", good); err != nil || ip != netip.MustParseAddr("127.0.0.2") || rec.App != egressAppA || !rec.AssignedAt.Equal(assignT0) {
		t.Fatalf("parseEIP = %v %+v %v", ip, rec, err)
	}
	for _, tc := range []struct{ key, value string }{
		{"eip/127.0.0.2", `{"app":"ap-1","assigned_at":"2025-01-01T00:00:00Z"}`},
		{"eip/127.0.0.2", `{"app":"` + egressAppA + `"}`},
		{"eip/::1", string(good)},
		{"eip/banana", string(good)},
		{"xip/127.0.0.2", string(good)},
		{"eip/127.0.0.2", `[]`},
	} {
		if _, _, err := parseEIP(tc.key, []byte(tc.value)); err == nil {
			t.Errorf("parseEIP(%q, %q) accepted", tc.key, tc.value)
		}
	}

	req, _ := json.Marshal(egressRequest{Action: reqEnable, ID: "x", IPs: []egressPick{{netip.MustParseAddr("127.0.0.2"), "g1"}}})
	if app, r, err := parseEgressRequest(ereqKey(egressAppA), req); err != nil || app != egressAppA || len(r.IPs) != 1 || r.IPs[0].Gateway != "g1" {
		t.Fatalf("parseEgressRequest = %q %+v %v", app, r, err)
	}
	for _, tc := range []struct{ key, value string }{
		{"ereq/ap-1", string(req)},
		{"eip/" + egressAppA, string(req)},
		{ereqKey(egressAppA), `{"action":"steal","id":"x"}`},
		{ereqKey(egressAppA), `{"action":"enable","id":"x","ips":[{"ip":"127.0.0.2","gateway":""}]}`},
		{ereqKey(egressAppA), `{"action":"enable","id":"x","ips":[{"ip":"","gateway":"g"}]}`},
		{ereqKey(egressAppA), `{"action":"enable","ips":[` + strings.Repeat(`{"ip":"127.0.0.2","gateway":"g"},`, maxRequestIPs) + `{"ip":"127.0.0.2","gateway":"g"}]}`},
	} {
		if _, _, err := parseEgressRequest(tc.key, []byte(tc.value)); err == nil {
			t.Errorf("parseEgressRequest(%q, %q) accepted", tc.key, tc.value)
		}
	}
}

// FuzzEgressRecords: records of peers and the state file are outside
// bytes; their decoders never panic.
func FuzzEgressRecords(f *testing.F) {
	f.Add("eip/127.0.0.2", []byte(`{"app":"`+egressAppA+`","assigned_at":"2025-01-01T00:00:00Z"}`))
	f.Add("ereq/"+egressAppA, []byte(`{"action":"enable","id":"1","ips":[{"ip":"127.0.0.2","gateway":"g1"}]}`))
	f.Add("", []byte(`{"draining":true,"assignments":[{"ip":"127.0.0.2","app":"`+egressAppA+`","assigned_at":"2025-01-01T00:00:00Z"}]}`))
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		parseEIP(key, value)
		parseEgressRequest(key, value)
		decodeEgressFile(value)
	})
}

func TestEgressFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, egressFileName)
	if f, err := readEgressFile(path); err != nil || len(f.Assignments) != 0 || f.Draining {
		t.Fatalf("missing file: %+v %v", f, err)
	}
	want := egressFile{Draining: true, Assignments: []persistedAssignment{{IP: netip.MustParseAddr("127.0.0.2"), App: egressAppA, AssignedAt: assignT0}}}
	b, _ := json.Marshal(want)
	if err := writeFileAtomic(path, b); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", st.Mode().Perm())
	}
	got, err := readEgressFile(path)
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
		if _, err := decodeEgressFile([]byte(bad)); err == nil {
			t.Errorf("decodeEgressFile(%q) accepted", bad)
		}
	}
}
