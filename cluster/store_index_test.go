package cluster

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// slowList is List the way it was before the directory index: every slot
// of the store, filtered and sorted. The reference for TestStoreIndex.
func slowList(s *Store, prefix string) []Entry {
	s.mu.Lock()
	var out []Entry
	for key, owners := range s.recs {
		if !strings.HasPrefix(key, prefix) {
			continue
		}
		for _, r := range owners {
			if s.visibleLocked(r) {
				out = append(out, r.entry())
			}
		}
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b Entry) int {
		return cmp.Or(strings.Compare(a.Key, b.Key), strings.Compare(a.Owner, b.Owner))
	})
	return out
}

func render(es []Entry) string {
	var b []string
	for _, e := range es {
		b = append(b, fmt.Sprintf("%s/%s=%s@%d", e.Owner, e.Key, e.Value, e.Version))
	}
	return strings.Join(b, " ")
}

// follower mirrors the store's visible entries by key through the journal,
// the way the daemon follows container records.
type follower struct {
	cursor uint64
	resets int
	m      map[string]string // key → rendered Entries(key)
}

func (f *follower) sync(s *Store) {
	keys, next, ok := s.ChangedSince("", f.cursor)
	f.cursor = next
	if !ok {
		f.resets++
		f.m = make(map[string]string)
		keys = nil
		for _, e := range s.List("") {
			keys = append(keys, e.Key)
		}
	}
	if f.m == nil {
		f.m = make(map[string]string)
	}
	for _, k := range keys {
		if es := s.Entries(k); len(es) > 0 {
			f.m[k] = render(es)
		} else {
			delete(f.m, k)
		}
	}
}

// truth is what a follower must hold: every visible entry by key, in
// Winner order.
func truth(s *Store) map[string]string {
	byKey := make(map[string][]Entry)
	for _, e := range slowList(s, "") {
		byKey[e.Key] = append(byKey[e.Key], e)
	}
	out := make(map[string]string)
	for k, es := range byKey {
		slices.SortStableFunc(es, func(a, b Entry) int {
			return cmp.Or(cmp.Compare(a.Claimed, b.Claimed), strings.Compare(a.Owner, b.Owner))
		})
		out[k] = render(es)
	}
	return out
}

// checkIndex verifies that the directory index holds exactly the keys of
// recs.
func checkIndex(t *testing.T, s *Store) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for dir, d := range s.dirs {
		if len(d.keys) == 0 {
			t.Fatalf("empty directory %q kept", dir)
		}
		for k := range d.keys {
			if s.recs[k] == nil || dirOf(k) != dir {
				t.Fatalf("index holds %q under %q; recs: %v", k, dir, s.recs[k] != nil)
			}
			n++
		}
	}
	if n != len(s.recs) {
		t.Fatalf("index holds %d keys, recs %d", n, len(s.recs))
	}
}

// TestStoreIndex drives a store through random puts, deletes, merges,
// owner changes and GC, and checks after every step that List agrees with
// a full scan for prefixes inside, across and beside directories, and that
// a follower of the journal holds what a full re-read would.
func TestStoreIndex(t *testing.T) {
	keys := []string{"x", "c/", "c/p1/10.240.0.1", "c/p1/10.240.0.2", "c/p1/10.240.1.1", "c/p2/10.240.0.1", "c/p12/10.240.0.1", "n/a/web/1", "n/a/web/2", "n/a/worker/1", "eip/127.0.0.2", "ereq/a"}
	prefixes := []string{"", "c", "c/", "c/p1", "c/p1/", "c/p1/10.240.0", "c/p1/10.240.0.1", "c/p2/", "n/a/", "n/a/web/", "e", "eip/", "x", "zz", "c/p1/10.240.0.1/"}
	owners := []string{"a", "b", "u"}
	rng := rand.New(rand.NewPCG(1, 2))
	s := newTestStore(t, "self", 7)
	s.setOwner("a", 1, true)
	s.setOwner("b", 2, true)
	boots := map[string]uint64{"a": 1, "b": 2, "u": 3}
	version := uint64(1)
	f := &follower{}
	for step := range 3000 {
		key := keys[rng.IntN(len(keys))]
		owner := owners[rng.IntN(len(owners))]
		var what string
		switch op := rng.IntN(20); {
		case op < 5:
			what = "put " + key
			s.Put(key, []byte(fmt.Sprint(step)))
		case op < 8:
			what = "delete " + key
			s.Delete(key)
		case op < 14:
			version++
			boot := boots[owner]
			if rng.IntN(5) == 0 {
				boot++ // the owner's next life, ahead of its metadata
			}
			r := rec(owner, key, version, boot, fmt.Sprint(step))
			r.Claimed = int64(rng.IntN(4)) // ties and reordering of claims
			if rng.IntN(4) == 0 {
				r = tomb(owner, key, version, boot)
			}
			what = fmt.Sprintf("deliver %s/%s deleted=%v", owner, key, r.deleted)
			s.deliver(t, r)
		case op < 17:
			if rng.IntN(4) == 0 {
				boots[owner]++
			}
			up := rng.IntN(3) > 0
			what = fmt.Sprintf("setOwner %s %d %v", owner, boots[owner], up)
			s.setOwner(owner, boots[owner], up)
		case op < 18:
			what = "forgetOwner " + owner
			s.forgetOwner(owner)
		default:
			what = "gc"
			s.advance(time.Duration(rng.IntN(40)) * time.Second)
			s.gc()
		}
		for _, p := range prefixes {
			if got, want := render(s.List(p)), render(slowList(s.Store, p)); got != want {
				t.Fatalf("step %d (%s): List(%q)\n got %s\nwant %s", step, what, p, got, want)
			}
		}
		if rng.IntN(3) == 0 || step == 2999 {
			f.sync(s.Store)
			want := truth(s.Store)
			for k, v := range want {
				if f.m[k] != v {
					t.Fatalf("step %d (%s): follower has %q = %q, want %q", step, what, k, f.m[k], v)
				}
			}
			for k, v := range f.m {
				if _, ok := want[k]; !ok {
					t.Fatalf("step %d (%s): follower kept %q = %q", step, what, k, v)
				}
			}
		}
		checkIndex(t, s.Store)
	}
	checkCount(t, s.Store)
	if f.resets != 0 {
		t.Errorf("follower had to re-read %d times", f.resets)
	}
}

func TestStoreJournal(t *testing.T) {
	s := newTestStore(t, "self", 7)
	s.setOwner("a", 1, true)
	keys, c0, ok := s.ChangedSince("", 0)
	if !ok || len(keys) != 0 {
		t.Fatalf("empty store: %q, %v", keys, ok)
	}
	s.Put("c/p/1", []byte("v"))
	s.Put("c/p/1", []byte("w"))
	s.Put("n/a/web/1", []byte("v"))
	s.deliver(t, rec("a", "c/p/2", 1, 1, "x"))
	keys, c1, ok := s.ChangedSince("c/", c0)
	if !ok || !slices.Equal(keys, []string{"c/p/1", "c/p/2"}) {
		t.Fatalf("ChangedSince(c/) = %q, %v; want each changed key once", keys, ok)
	}
	if keys, _, _ := s.ChangedSince("c/", c1); len(keys) != 0 {
		t.Fatalf("nothing changed, got %q", keys)
	}
	// The owner going down hides its entry: that is a change of the key.
	s.setOwner("a", 1, false)
	keys, c2, _ := s.ChangedSince("", c1)
	if !slices.Equal(keys, []string{"c/p/2"}) {
		t.Fatalf("after owner down: %q", keys)
	}
	// Metadata updates that leave visibility alone are not.
	s.setOwner("a", 1, false)
	if keys, _, _ := s.ChangedSince("", c2); len(keys) != 0 {
		t.Fatalf("unchanged owner logged %q", keys)
	}
	// A cursor from the future, or one the journal forgot, asks for a re-read.
	if _, _, ok := s.ChangedSince("", c2+1); ok {
		t.Fatal("cursor beyond the journal accepted")
	}
	for i := range 3 * journalMin {
		s.Put("k", []byte{byte(i)})
	}
	if _, _, ok := s.ChangedSince("", c2); ok {
		t.Fatal("trimmed journal still claims to reach back")
	}
	if l := len(s.journal.keys); l > journalMin {
		t.Fatalf("journal holds %d changes of 4 keys", l)
	}
	if _, next, ok := s.ChangedSince("", s.journal.base); !ok || next != s.journal.seq() {
		t.Fatal("oldest remembered cursor refused")
	}
}

func TestStoreEntries(t *testing.T) {
	s := newTestStore(t, "self", 7)
	s.setOwner("a", 1, true)
	s.setOwner("b", 2, true)
	s.deliver(t,
		record{Entry: Entry{Key: "k", Owner: "b", Version: 1, Claimed: 5}, boot: 2},
		record{Entry: Entry{Key: "k", Owner: "a", Version: 1, Claimed: 5}, boot: 1},
		record{Entry: Entry{Key: "k", Owner: "u", Version: 1, Claimed: 1}, boot: 1}, // unknown owner: hidden
		record{Entry: Entry{Key: "j", Owner: "a", Version: 1, Claimed: 1}, boot: 1},
	)
	s.clock = time.Unix(0, 9)
	s.Put("k", []byte("mine"))
	var got []string
	for _, e := range s.Entries("k") {
		got = append(got, e.Owner)
	}
	if want := []string{"a", "b", "self"}; !slices.Equal(got, want) {
		t.Fatalf("Entries = %q, want %q (Winner's order)", got, want)
	}
	if w, _ := s.Winner("k"); w.Owner != got[0] {
		t.Fatalf("Winner %q is not Entries' first", w.Owner)
	}
	if es := s.Entries("none"); len(es) != 0 {
		t.Fatalf("Entries of a missing key: %v", es)
	}
}

// BenchmarkStoreList lists one directory of a store that holds a full
// network of container records and their numbers.
func BenchmarkStoreList(b *testing.B) {
	s := newStore("self", 7, time.Minute)
	for i := range 1022 {
		s.Put(fmt.Sprintf("c/pn/10.240.%d.%d", i/256, i%256), make([]byte, 150))
		s.Put(fmt.Sprintf("n/app/worker/%d", i+1), []byte("c-0123456789ab"))
	}
	s.Put("eip/127.0.0.2", []byte("{}"))
	b.ReportAllocs()
	for b.Loop() {
		if len(s.List("eip/")) != 1 {
			b.Fatal("eip record missing")
		}
	}
}

// FuzzStoreList checks List against a full scan for any prefix, over keys
// with and without directories.
func FuzzStoreList(f *testing.F) {
	for _, p := range []string{"", "c", "c/", "c/p1/", "c/p1/10.240.0", "n/a/web/1", "x/", "/", "zz"} {
		f.Add(p)
	}
	s := newStore("self", 7, time.Minute)
	for _, k := range []string{"x", "x/", "/", "//", "c/", "c/p1/10.240.0.1", "c/p1/10.240.0.10", "c/p12/10.240.0.1", "c/p1/10.240.0.1/a", "n/a/web/1", "n/a/web/12", "n/a/worker/1"} {
		s.Put(k, []byte(k))
	}
	f.Fuzz(func(t *testing.T, prefix string) {
		if got, want := render(s.List(prefix)), render(slowList(s, prefix)); got != want {
			t.Fatalf("List(%q)\n got %s\nwant %s", prefix, got, want)
		}
	})
}
