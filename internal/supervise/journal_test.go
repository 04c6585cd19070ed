package supervise

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vrouter/vrouter/internal/control"
)

func port(id string) Port {
	return Port{Container: control.Container{ID: id, IP: "10.240.0.7", Network: "pn-x"}, VNI: 9}
}

func ids(ps []Port) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.ID)
	}
	return strings.Join(s, ",")
}

func readIDs(t *testing.T, dir string) string {
	t.Helper()
	ps, err := ReadJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ids(ps)
}

func logLines(t *testing.T, dir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, JournalLog))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}

// Holds and releases go to the log, one record each, and what a reader
// finds at any moment (a holder killed there) is every change so far.
func TestJournalAppends(t *testing.T) {
	dir := t.TempDir()
	j, err := NewJournal(dir, []Port{port("c-a")})
	if err != nil {
		t.Fatal(err)
	}
	snap, _ := os.ReadFile(filepath.Join(dir, JournalFile))
	for _, id := range []string{"c-b", "c-c"} {
		if err := j.Put(port(id)); err != nil {
			t.Fatal(err)
		}
	}
	if got := readIDs(t, dir); got != "c-a,c-b,c-c" {
		t.Fatalf("after two holds: %s", got)
	}
	if err := j.Delete("c-a"); err != nil {
		t.Fatal(err)
	}
	p := port("c-b")
	p.VnetHdr = true
	if err := j.Put(p); err != nil {
		t.Fatal(err)
	}
	ps, err := ReadJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	if ids(ps) != "c-b,c-c" || !ps[0].VnetHdr || ps[0].VNI != 9 || ps[1].VnetHdr {
		t.Fatalf("after a release and a replacement: %+v", ps)
	}
	if now, _ := os.ReadFile(filepath.Join(dir, JournalFile)); string(now) != string(snap) {
		t.Fatal("a hold rewrote the snapshot")
	}
	if n := logLines(t, dir); n != 5 {
		t.Fatalf("log has %d lines, want the header and 4 records", n)
	}
	if err := j.Delete("c-unknown"); err != nil || logLines(t, dir) != 5 {
		t.Fatalf("releasing an unknown port: %v, %d lines", err, logLines(t, dir))
	}
}

// The log is folded into the snapshot once it outgrows it, so that churn
// on a node with few ports keeps both files small.
func TestJournalCompacts(t *testing.T) {
	dir := t.TempDir()
	j, err := NewJournal(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	maxLines := 0
	for i := range 500 {
		id := fmt.Sprint("c-", i%3)
		if err := j.Put(port(id)); err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			if err := j.Delete(id); err != nil {
				t.Fatal(err)
			}
		}
		maxLines = max(maxLines, logLines(t, dir))
	}
	if limit := 1 + compactMin + 2*3 + 1; maxLines > limit {
		t.Fatalf("log grew to %d lines, want ≤ %d", maxLines, limit)
	}
	want := map[string]bool{}
	for i := range 500 {
		want[fmt.Sprint("c-", i%3)] = i%2 == 0
	}
	var ws []string
	for id, held := range want {
		if held {
			ws = append(ws, id)
		}
	}
	slices.Sort(ws)
	if got := readIDs(t, dir); got != strings.Join(ws, ",") {
		t.Fatalf("after churn: %s, want %s", got, strings.Join(ws, ","))
	}
}

// A record cut short by a crash was never acknowledged: it is ignored,
// and the holder that starts next rewrites the journal without it.
func TestJournalTornRecord(t *testing.T) {
	dir := t.TempDir()
	j, err := NewJournal(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Put(port("c-a")); err != nil {
		t.Fatal(err)
	}
	rec, _ := json.Marshal(logRecord{Put: &Port{Container: control.Container{ID: "c-torn"}}})
	f, err := os.OpenFile(filepath.Join(dir, JournalLog), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(rec[:len(rec)-3])
	f.Close()
	if got := readIDs(t, dir); got != "c-a" {
		t.Fatalf("with a torn record: %s", got)
	}
	// A complete line that does not parse is damage, not a crash.
	os.WriteFile(filepath.Join(dir, JournalLog), []byte(strings.Repeat("x", 5)+"\n"), 0o600)
	if _, err := ReadJournal(dir); err == nil {
		t.Fatal("a damaged log was accepted")
	}
}

// A crash between a compaction's two renames leaves the new snapshot
// beside the old log: the log's generation is stale, so its records are
// not applied again (here they would bring back a port that was emptied).
func TestJournalStaleLog(t *testing.T) {
	dir := t.TempDir()
	j, err := NewJournal(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Put(port("c-a")); err != nil {
		t.Fatal(err)
	}
	oldLog, _ := os.ReadFile(filepath.Join(dir, JournalLog))
	if err := j.Reset(nil); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, JournalLog), oldLog, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := readIDs(t, dir); got != "" {
		t.Fatalf("a stale log was applied: %s", got)
	}
}

// A journal of the version before the log (a snapshot only) reads as it
// did; the first change of a new holder writes both files.
func TestJournalSnapshotOnly(t *testing.T) {
	dir := t.TempDir()
	b, _ := json.Marshal(map[string]any{"ports": []Port{port("c-old")}})
	if err := os.WriteFile(filepath.Join(dir, JournalFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := readIDs(t, dir); got != "c-old" {
		t.Fatalf("old journal: %s", got)
	}
	j := unwrittenJournal(dir)
	if err := j.Put(port("c-new")); err != nil {
		t.Fatal(err)
	}
	if got := readIDs(t, dir); got != "c-new" {
		t.Fatalf("after the first change: %s", got)
	}
	if err := j.Put(port("c-2")); err != nil || logLines(t, dir) != 2 {
		t.Fatalf("second change: %v, %d log lines", err, logLines(t, dir))
	}
}

// A log that disappeared is not recreated without its header (a reader
// would ignore it): the change rewrites the journal instead.
func TestJournalLogRemoved(t *testing.T) {
	dir := t.TempDir()
	j, err := NewJournal(dir, []Port{port("c-a")})
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, JournalLog))
	if err := j.Put(port("c-b")); err != nil {
		t.Fatal(err)
	}
	if got := readIDs(t, dir); got != "c-a,c-b" {
		t.Fatalf("after the log vanished: %s", got)
	}
}

// A failed hold leaves the journal as it was, and the next change
// rewrites all of it.
func TestJournalPutFails(t *testing.T) {
	dir := t.TempDir()
	j, err := NewJournal(dir, []Port{port("c-a")})
	if err != nil {
		t.Fatal(err)
	}
	// A directory in the log's place: neither an append nor a rename
	// over it works, whoever runs the test.
	logPath := filepath.Join(dir, JournalLog)
	os.Remove(logPath)
	if err := os.Mkdir(logPath, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := j.Put(port("c-b")); err == nil {
		t.Fatal("a hold succeeded without a log")
	}
	if err := j.Delete("c-a"); err == nil {
		t.Fatal("a release succeeded without a log")
	}
	os.Remove(logPath)
	if err := j.Put(port("c-c")); err != nil {
		t.Fatal(err)
	}
	if got := readIDs(t, dir); got != "c-c" {
		t.Fatalf("after a failed hold and release: %s", got)
	}
	if err := j.Put(port("c-d")); err != nil || logLines(t, dir) != 2 {
		t.Fatalf("appending again: %v, %d log lines", err, logLines(t, dir))
	}
}
