package cluster

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// testStore is a standalone store with a manual clock that records what it
// would gossip.
type testStore struct {
	*Store
	clock time.Time
	sent  []record
}

// testSigningKey is a node's signing key in tests: derived from its name, so
// every test store knows every other's.
func testSigningKey(name string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("test signing key " + name))
	return ed25519.NewKeyFromSeed(seed[:])
}

func testSigner(name string) *signer {
	s, err := newSigner(testSigningKey(name))
	if err != nil {
		panic(err)
	}
	return s
}

// testKeyOf pins every name to its testSigningKey.
func testKeyOf(name string) ([32]byte, bool) { return testSigner(name).pub, true }

// signed returns r signed by its owner's testSigningKey.
func signed(r record) record {
	testSigner(r.Owner).signRecord(nil, &r)
	return r
}

func newTestStore(t testing.TB, self string, boot uint64) *testStore {
	ts := &testStore{clock: time.Unix(1_700_000_000, 0)}
	ts.Store = newStore(self, boot, time.Minute)
	ts.sign = testSigner(self)
	ts.keyOf = testKeyOf
	ts.now = func() time.Time { return ts.clock }
	ts.out = func(name string, msg []byte) {
		m, err := decodeMessage(msg)
		if err != nil || len(m.records) != 1 {
			t.Fatalf("store gossiped an undecodable message %x: %v", msg, err)
		}
		if want := m.records[0].Owner + "\x00" + m.records[0].Key; name != want {
			t.Fatalf("broadcast name %q, want %q", name, want)
		}
		ts.sent = append(ts.sent, m.records[0])
	}
	return ts
}

func (ts *testStore) advance(d time.Duration) { ts.clock = ts.clock.Add(d) }

// deliver feeds records as one gossip message.
func (ts *testStore) deliver(t testing.TB, recs ...record) {
	t.Helper()
	ptrs := make([]*record, len(recs))
	for i := range recs {
		if recs[i].sig == ([sigSize]byte{}) {
			recs[i] = signed(recs[i])
		}
		ptrs[i] = &recs[i]
	}
	if _, err := ts.handleMessage(encodeRecords(ptrs...), true); err != nil {
		t.Fatalf("deliver: %v", err)
	}
}

func rec(owner, key string, version uint64, boot uint64, value string) record {
	return record{Entry: Entry{Key: key, Owner: owner, Version: version, Claimed: int64(version), Value: []byte(value)}, boot: boot}
}

func tomb(owner, key string, version uint64, boot uint64) record {
	return record{Entry: Entry{Key: key, Owner: owner, Version: version, Claimed: int64(version)}, boot: boot, deleted: true}
}

// view renders the visible entries as "owner/key=value@version" lines.
func view(s *Store) string {
	var b []string
	for _, e := range s.List("") {
		b = append(b, fmt.Sprintf("%s/%s=%s@%d", e.Owner, e.Key, e.Value, e.Version))
	}
	return strings.Join(b, " ")
}

func TestStoreMerge(t *testing.T) {
	type owner struct {
		name string
		boot uint64
		up   bool
	}
	up := func(name string, boot uint64) owner { return owner{name, boot, true} }
	down := func(name string, boot uint64) owner { return owner{name, boot, false} }
	tests := []struct {
		name   string
		owners []owner    // applied before the records
		recs   []record   // delivered one message each, in order
		then   []owner    // applied after the records
		want   string     // view()
		stats  StoreStats // checked fields: Records*, Entries, Hidden, Tombstones
	}{
		{
			name:   "higher version wins",
			owners: []owner{up("a", 1)},
			recs:   []record{rec("a", "k", 1, 1, "x"), rec("a", "k", 2, 1, "y")},
			want:   "a/k=y@2",
			stats:  StoreStats{RecordsApplied: 2, Entries: 1},
		},
		{
			name:   "out of order: older version ignored",
			owners: []owner{up("a", 1)},
			recs:   []record{rec("a", "k", 2, 1, "y"), rec("a", "k", 1, 1, "x")},
			want:   "a/k=y@2",
			stats:  StoreStats{RecordsApplied: 1, RecordsStale: 1, Entries: 1},
		},
		{
			name:   "duplicates are idempotent",
			owners: []owner{up("a", 1)},
			recs:   []record{rec("a", "k", 1, 1, "x"), rec("a", "k", 1, 1, "x"), rec("a", "k", 1, 1, "x")},
			want:   "a/k=x@1",
			stats:  StoreStats{RecordsApplied: 1, RecordsDuplicate: 2, Entries: 1},
		},
		{
			name:   "tombstone deletes",
			owners: []owner{up("a", 1)},
			recs:   []record{rec("a", "k", 1, 1, "x"), tomb("a", "k", 2, 1)},
			want:   "",
			stats:  StoreStats{RecordsApplied: 2, Tombstones: 1},
		},
		{
			name:   "tombstone before the live copy it deletes",
			owners: []owner{up("a", 1)},
			recs:   []record{tomb("a", "k", 2, 1), rec("a", "k", 1, 1, "x")},
			want:   "",
			stats:  StoreStats{RecordsApplied: 1, RecordsStale: 1, Tombstones: 1},
		},
		{
			name:   "tombstone beats live at equal version",
			owners: []owner{up("a", 1)},
			recs:   []record{rec("a", "k", 3, 1, "x"), tomb("a", "k", 3, 1), rec("a", "k", 3, 1, "x")},
			want:   "",
			stats:  StoreStats{RecordsApplied: 2, RecordsDuplicate: 1, Tombstones: 1},
		},
		{
			name:   "re-put after delete",
			owners: []owner{up("a", 1)},
			recs:   []record{rec("a", "k", 1, 1, "x"), tomb("a", "k", 2, 1), rec("a", "k", 3, 1, "z")},
			want:   "a/k=z@3",
			stats:  StoreStats{RecordsApplied: 3, Entries: 1},
		},
		{
			name:   "owners do not interfere",
			owners: []owner{up("a", 1), up("b", 2)},
			recs:   []record{rec("a", "k", 5, 1, "x"), rec("b", "k", 1, 2, "y"), tomb("b", "k", 2, 2)},
			want:   "a/k=x@5",
			stats:  StoreStats{RecordsApplied: 3, Entries: 1, Tombstones: 1},
		},
		{
			name:  "unknown owner: hidden until known",
			recs:  []record{rec("a", "k", 1, 1, "x")},
			want:  "",
			stats: StoreStats{RecordsApplied: 1, Hidden: 1},
		},
		{
			name:  "unknown owner becomes alive",
			recs:  []record{rec("a", "k", 1, 1, "x")},
			then:  []owner{up("a", 1)},
			want:  "a/k=x@1",
			stats: StoreStats{RecordsApplied: 1, Entries: 1},
		},
		{
			name:   "dead owner: hidden at once",
			owners: []owner{up("a", 1)},
			recs:   []record{rec("a", "k", 1, 1, "x"), rec("a", "l", 2, 1, "y")},
			then:   []owner{down("a", 1)},
			want:   "",
			stats:  StoreStats{RecordsApplied: 2, Hidden: 2},
		},
		{
			name:   "dead owner back alive with the same BootID",
			owners: []owner{up("a", 1)},
			recs:   []record{rec("a", "k", 1, 1, "x")},
			then:   []owner{down("a", 1), up("a", 1)},
			want:   "a/k=x@1",
			stats:  StoreStats{RecordsApplied: 1, Entries: 1},
		},
		{
			name:   "records of a dead owner still merge, hidden",
			owners: []owner{down("a", 1)},
			recs:   []record{rec("a", "k", 1, 1, "x")},
			want:   "",
			stats:  StoreStats{RecordsApplied: 1, Hidden: 1},
		},
		{
			name:   "owner restarted: previous life's entries dropped",
			owners: []owner{up("a", 1)},
			recs:   []record{rec("a", "k", 1, 1, "x"), rec("a", "old", 2, 1, "y")},
			then:   []owner{down("a", 1), up("a", 2)},
			want:   "",
			stats:  StoreStats{RecordsApplied: 2},
		},
		{
			name:   "new life's entries arriving before its metadata are hidden, then shown",
			owners: []owner{up("a", 1)},
			recs:   []record{rec("a", "k", 1, 1, "old"), rec("a", "k", 10, 2, "new"), rec("a", "n", 11, 2, "n")},
			then:   []owner{up("a", 2)},
			want:   "a/k=new@10 a/n=n@11",
			stats:  StoreStats{RecordsApplied: 3, Entries: 2},
		},
		{
			name:   "previous life's straggler after the restart stays hidden",
			owners: []owner{up("a", 2)},
			recs:   []record{rec("a", "k", 1, 1, "old"), rec("a", "n", 10, 2, "n")},
			want:   "a/n=n@10",
			stats:  StoreStats{RecordsApplied: 2, Entries: 1, Hidden: 1},
		},
		{
			name:   "copy of our own previous life refused",
			owners: []owner{up("a", 1)},
			recs:   []record{rec("self", "k", 1, 99, "x")},
			want:   "",
			stats:  StoreStats{RecordsRejected: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestStore(t, "self", 7)
			for _, o := range tt.owners {
				s.setOwner(o.name, o.boot, o.up)
			}
			for _, r := range tt.recs {
				s.deliver(t, r)
			}
			for _, o := range tt.then {
				s.setOwner(o.name, o.boot, o.up)
			}
			if got := view(s.Store); got != tt.want {
				t.Errorf("view = %q, want %q", got, tt.want)
			}
			st := s.Stats()
			got := StoreStats{
				RecordsApplied: st.RecordsApplied, RecordsDuplicate: st.RecordsDuplicate, RecordsStale: st.RecordsStale, RecordsRejected: st.RecordsRejected,
				Entries: st.Entries, Hidden: st.Hidden, Tombstones: st.Tombstones,
			}
			if got != tt.stats {
				t.Errorf("stats = %+v, want %+v", got, tt.stats)
			}
			if st.MsgsReceived != uint64(len(tt.recs)) {
				t.Errorf("MsgsReceived = %d, want %d", st.MsgsReceived, len(tt.recs))
			}
		})
	}
}

// TestStoreRegossip: news learned from gossip is passed on once;
// duplicates are not, so re-gossip terminates.
func TestStoreRegossip(t *testing.T) {
	s := newTestStore(t, "self", 7)
	s.setOwner("a", 1, true)
	s.deliver(t, rec("a", "k", 1, 1, "x"))
	s.deliver(t, rec("a", "k", 1, 1, "x"))
	if len(s.sent) != 1 || s.sent[0].Owner != "a" || s.sent[0].Version != 1 {
		t.Fatalf("re-gossiped %+v, want a/k@1 once", s.sent)
	}
	// Push-pull state is not re-gossiped: push-pull itself spreads it.
	st := encodeState([]*record{{Entry: Entry{Key: "j", Owner: "a", Version: 2}, boot: 1}})
	if _, err := s.handleMessage(st, false); err != nil {
		t.Fatal(err)
	}
	if len(s.sent) != 1 {
		t.Fatalf("push-pull state was re-gossiped: %+v", s.sent)
	}
}

// TestStoreOwnerAuthority: a peer holding a newer copy of our entry than we
// do (we GC'd its tombstone) gets a fresh tombstone back.
func TestStoreOwnerAuthority(t *testing.T) {
	s := newTestStore(t, "self", 7)
	e := s.Put("k", []byte("v"))
	s.Delete("k")
	s.advance(2 * time.Minute)
	s.gc()
	if st := s.Stats(); st.Tombstones != 0 {
		t.Fatalf("tombstone not GC'd: %+v", st)
	}
	s.sent = nil
	stale := record{Entry: e, boot: 7}
	s.deliver(t, stale)
	if _, ok := s.Get("self", "k"); ok {
		t.Fatal("stale copy of our own entry accepted")
	}
	if len(s.sent) != 1 || !s.sent[0].deleted || s.sent[0].Version <= e.Version {
		t.Fatalf("sent %+v, want a tombstone newer than version %d", s.sent, e.Version)
	}
	// An echo of what we hold is a plain duplicate.
	s.sent = nil
	s.deliver(t, s.recs["k"]["self"].record)
	if len(s.sent) != 0 {
		t.Fatalf("echo of our own tombstone answered: %+v", s.sent)
	}
}

func TestStorePutDelete(t *testing.T) {
	s := newTestStore(t, "self", 7)
	e1 := s.Put("k", []byte("a"))
	s.advance(time.Second)
	e2 := s.Put("k", []byte("b"))
	if e2.Claimed != e1.Claimed {
		t.Errorf("update changed Claimed: %d → %d", e1.Claimed, e2.Claimed)
	}
	if e2.Version <= e1.Version {
		t.Errorf("version did not grow: %d → %d", e1.Version, e2.Version)
	}
	// The clock standing still (or stepping back) never repeats a version.
	s.advance(-time.Hour)
	e3 := s.Put("k", []byte("c"))
	if e3.Version <= e2.Version {
		t.Errorf("version after clock step back: %d → %d", e2.Version, e3.Version)
	}
	s.advance(2 * time.Hour)
	s.Delete("k")
	if _, ok := s.Get("self", "k"); ok {
		t.Error("deleted entry still visible")
	}
	s.Delete("k") // no-op
	s.Delete("never-put")
	s.advance(time.Second)
	e4 := s.Put("k", []byte("d"))
	if e4.Claimed == e1.Claimed {
		t.Error("re-put after delete kept the old Claimed")
	}
	if len(s.sent) != 5 {
		t.Errorf("gossiped %d records, want 5 (4 puts, 1 delete)", len(s.sent))
	}
	// Returned values are copies.
	e4.Value[0] = 'X'
	if got, _ := s.Get("self", "k"); string(got.Value) != "d" {
		t.Errorf("caller's change leaked into the store: %q", got.Value)
	}
}

func TestStorePutPanicsOnOversize(t *testing.T) {
	s := newTestStore(t, "self", 7)
	for _, tt := range []struct {
		key   string
		value []byte
	}{
		{"", nil},
		{strings.Repeat("k", MaxKeyLen+1), nil},
		{"k", make([]byte, MaxValueLen+1)},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Put(%d-byte key, %d-byte value) did not panic", len(tt.key), len(tt.value))
				}
			}()
			s.Put(tt.key, tt.value)
		}()
		if err := CheckEntry(tt.key, tt.value); err == nil {
			t.Errorf("CheckEntry(%d-byte key, %d-byte value) = nil", len(tt.key), len(tt.value))
		}
	}
	if _, err := s.Claim(context.Background(), "k", make([]byte, MaxValueLen+1), 0); err == nil {
		t.Error("Claim with an oversized value succeeded")
	}
}

func TestStoreWinner(t *testing.T) {
	claim := func(owner, key string, claimed int64, boot uint64) record {
		return record{Entry: Entry{Key: key, Owner: owner, Version: 1, Claimed: claimed}, boot: boot}
	}
	tests := []struct {
		name string
		recs []record
		down []string
		want string // winning owner, "" for none
	}{
		{"none", nil, nil, ""},
		{"single", []record{claim("b", "k", 5, 2)}, nil, "b"},
		{"first claim wins", []record{claim("a", "k", 9, 1), claim("b", "k", 5, 2)}, nil, "b"},
		{"same Claimed: smaller owner name", []record{claim("b", "k", 5, 2), claim("a", "k", 5, 1)}, nil, "a"},
		{"other keys do not count", []record{claim("a", "j", 1, 1), claim("b", "k", 5, 2)}, nil, "b"},
		{"dead owner's claim does not count", []record{claim("a", "k", 1, 1), claim("b", "k", 5, 2)}, []string{"a"}, "b"},
		{"all owners dead", []record{claim("a", "k", 1, 1)}, []string{"a"}, ""},
		{"deleted claim does not count", []record{claim("a", "k", 1, 1), {Entry: Entry{Key: "k", Owner: "a", Version: 2, Claimed: 1}, boot: 1, deleted: true}, claim("b", "k", 5, 2)}, nil, "b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestStore(t, "self", 7)
			s.setOwner("a", 1, true)
			s.setOwner("b", 2, true)
			for _, r := range tt.recs {
				s.deliver(t, r)
			}
			for _, o := range tt.down {
				s.setOwner(o, 1, false)
			}
			w, ok := s.Winner("k")
			if got := w.Owner; got != tt.want || ok != (tt.want != "") {
				t.Fatalf("Winner = %q, %v; want %q", got, ok, tt.want)
			}
		})
	}
}

func TestStoreClaim(t *testing.T) {
	ctx := context.Background()
	t.Run("alone wins", func(t *testing.T) {
		s := newTestStore(t, "self", 7)
		ok, err := s.Claim(ctx, "k", []byte("v"), 0)
		if err != nil || !ok {
			t.Fatalf("Claim = %v, %v", ok, err)
		}
		// Claiming again what we hold keeps it.
		if ok, err := s.Claim(ctx, "k", []byte("w"), 0); err != nil || !ok {
			t.Fatalf("re-Claim = %v, %v", ok, err)
		}
	})
	t.Run("visible competitor: not even put", func(t *testing.T) {
		s := newTestStore(t, "self", 7)
		s.setOwner("a", 1, true)
		s.deliver(t, rec("a", "k", 1, 1, "x"))
		s.sent = nil
		ok, err := s.Claim(ctx, "k", []byte("v"), 0)
		if err != nil || ok {
			t.Fatalf("Claim = %v, %v; want false", ok, err)
		}
		if _, held := s.Get("self", "k"); held || len(s.sent) != 0 {
			t.Fatal("losing claim was put")
		}
		if n := s.Stats().ClaimsRaced; n != 1 {
			t.Fatalf("claims raced %d, want 1", n)
		}
	})
	t.Run("earlier competitor arrives during settle", func(t *testing.T) {
		s := newTestStore(t, "self", 7)
		s.setOwner("a", 1, true)
		delivered := false
		s.out = func(string, []byte) {
			// The competing claim, made before ours, lands while we settle.
			if !delivered {
				delivered = true
				s.deliver(t, rec("a", "k", 1, 1, "x"))
			}
		}
		ok, err := s.Claim(ctx, "k", []byte("v"), time.Millisecond)
		if err != nil || ok {
			t.Fatalf("Claim = %v, %v; want false", ok, err)
		}
	})
	t.Run("cancelled during settle: withdrawn", func(t *testing.T) {
		s := newTestStore(t, "self", 7)
		ctx, cancel := context.WithCancel(ctx)
		s.out = func(string, []byte) { cancel() }
		ok, err := s.Claim(ctx, "k", []byte("v"), time.Hour)
		if ok || !errors.Is(err, context.Canceled) {
			t.Fatalf("Claim = %v, %v; want false, context.Canceled", ok, err)
		}
		if _, held := s.Get("self", "k"); held {
			t.Fatal("cancelled claim still held")
		}
	})
}

func TestStoreGC(t *testing.T) {
	s := newTestStore(t, "self", 7)
	s.setOwner("a", 1, true)
	s.setOwner("d", 4, true)
	s.Put("mine", []byte("v"))
	s.Put("gone", nil)
	s.Delete("gone")
	s.deliver(t,
		rec("a", "live", 1, 1, "x"),
		tomb("a", "dead", 2, 1),
		rec("u", "orphan", 1, 1, "x"),    // unknown owner
		rec("a", "otherboot", 3, 9, "x"), // another life of a
		rec("d", "downowner", 1, 4, "x"),
	)
	s.setOwner("d", 4, false)
	s.advance(30 * time.Second)
	s.gc()
	if st := s.Stats(); st.Tombstones != 2 || st.Hidden != 3 {
		t.Fatalf("GC before the TTL: %+v", st)
	}
	s.advance(31 * time.Second)
	s.gc()
	st := s.Stats()
	// Left: mine, a/live (visible) and d/downowner (hidden until reaped).
	if st.Tombstones != 0 || st.Entries != 2 || st.Hidden != 1 {
		t.Fatalf("GC after the TTL: %+v", st)
	}

	// Reaping an owner drops its entries and refuses that life's copies.
	s.forgetOwner("d")
	if st := s.Stats(); st.Hidden != 0 {
		t.Fatalf("reaped owner's entries kept: %+v", st)
	}
	s.deliver(t, rec("d", "downowner", 1, 4, "x"))
	if st := s.Stats(); st.Hidden != 0 || st.RecordsRejected != 1 {
		t.Fatalf("reaped owner's entry came back: %+v", st)
	}
	// Until the graveyard entry expires, or the owner returns.
	s.setOwner("d", 4, true)
	s.deliver(t, rec("d", "downowner", 1, 4, "x"))
	if _, ok := s.Get("d", "downowner"); !ok {
		t.Fatalf("returned owner's entry refused: %s", view(s.Store))
	}
	s.forgetOwner("d")
	s.advance(2 * time.Minute)
	s.gc()
	if len(s.graveyard) != 0 {
		t.Fatalf("graveyard not GC'd: %v", s.graveyard)
	}
	checkCount(t, s.Store)
}

func TestStoreLocalState(t *testing.T) {
	s := newTestStore(t, "self", 7)
	s.setOwner("a", 1, false)
	s.Put("mine", []byte("v"))
	s.deliver(t, rec("a", "k", 1, 1, "x"), tomb("a", "t", 2, 1), rec("u", "orphan", 1, 1, "x"))

	// A fresh node merging our state gets everything but the orphan.
	peer := newTestStore(t, "peer", 3)
	peer.setOwner("a", 1, true)
	peer.setOwner("self", 7, true)
	if _, err := peer.handleMessage(s.localState(), false); err != nil {
		t.Fatal(err)
	}
	st := peer.Stats()
	if st.Entries != 2 || st.Tombstones != 1 || st.Hidden != 0 {
		t.Fatalf("peer after push-pull: %+v (%s)", st, view(peer.Store))
	}
	// Merging the same state again changes nothing.
	if _, err := peer.handleMessage(s.localState(), false); err != nil {
		t.Fatal(err)
	}
	if st2 := peer.Stats(); st2.RecordsApplied != st.RecordsApplied {
		t.Fatalf("second merge applied records: %+v", st2)
	}
}

func TestStoreDropsGarbage(t *testing.T) {
	s := newTestStore(t, "self", 7)
	for _, b := range [][]byte{nil, {wireVersion}, {1, 1, 0, 0}, {wireVersion, 9}, {wireVersion, msgRecords, 0, 5}} {
		if _, err := s.handleMessage(b, true); err == nil {
			t.Fatalf("accepted %x", b)
		}
	}
	st := s.Stats()
	if st.MsgsReceived != 5 || st.MsgsBadVersion != 1 || st.MsgsMalformed != 4 {
		t.Fatalf("counters %+v", st)
	}
}

// TestStoreConcurrency is meant for the race detector.
func TestStoreConcurrency(t *testing.T) {
	s := newStore("self", 7, time.Minute)
	s.setOwner("a", 1, true)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 200 {
				key := fmt.Sprintf("k%d", j%10)
				switch i {
				case 0:
					s.Put(key, []byte("v"))
				case 1:
					r := rec("a", key, uint64(j+1), 1, "x")
					_, _ = s.handleMessage(encodeRecords(&r), true)
				case 2:
					s.Winner(key)
					s.List("k")
					_ = s.localState()
				case 3:
					s.setOwner("a", 1, j%2 == 0)
					s.gc()
					s.Delete(key)
				}
			}
		}()
	}
	wg.Wait()
	if st := s.Stats(); st.MsgsReceived != 200 {
		t.Fatalf("MsgsReceived = %d", st.MsgsReceived)
	}
	checkCount(t, s)
}

// checkCount verifies the running record count against the maps.
func checkCount(t *testing.T, s *Store) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, m := range s.recs {
		n += len(m)
	}
	if n != s.nrecs {
		t.Fatalf("nrecs = %d, maps hold %d", s.nrecs, n)
	}
}

// TestStoreOwnerQuota (AUDIT D10): one owner cannot hold more than its
// quota of slots; the others' records are still merged, its own updates
// of what it holds too, and a freed slot can be taken again.
func TestStoreOwnerQuota(t *testing.T) {
	s := newTestStore(t, "me", 1)
	s.quota = 3
	s.setOwner("rogue", 1, true)
	s.setOwner("honest", 1, true)
	for i := range 5 {
		s.deliver(t, rec("rogue", fmt.Sprintf("k%d", i), 1, 1, "x"))
	}
	s.deliver(t, rec("honest", "h", 1, 1, "x"))
	s.deliver(t, rec("rogue", "k0", 2, 1, "updated"))
	if st := s.Stats(); st.RecordsRejected != 2 {
		t.Fatalf("rejected %d over the quota, want 2", st.RecordsRejected)
	}
	if got := view(s.Store); got != "honest/h=x@1 rogue/k0=updated@2 rogue/k1=x@1 rogue/k2=x@1" {
		t.Fatalf("store holds %s", got)
	}
	s.deliver(t, tomb("rogue", "k1", 2, 1))
	s.advance(2 * time.Minute)
	s.gc()
	s.deliver(t, rec("rogue", "k3", 1, 1, "x"))
	if _, ok := s.Get("rogue", "k3"); !ok {
		t.Fatal("a slot freed by GC was not available again")
	}
}
