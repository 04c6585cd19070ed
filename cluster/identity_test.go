package cluster

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/leaktest"
	"github.com/vrouter/vrouter/internal/poll"
)

// forge returns r signed by the rogue's key whatever its owner says.
func forge(r record) record {
	testSigner("rogue").signRecord(nil, &r)
	return r
}

// deliverRaw feeds records as they are, signatures included.
func (ts *testStore) deliverRaw(t testing.TB, recs ...record) {
	t.Helper()
	ptrs := make([]*record, len(recs))
	for i := range recs {
		ptrs[i] = &recs[i]
	}
	if _, err := ts.handleMessage(encodeRecords(ptrs...), true); err != nil {
		t.Fatalf("deliver: %v", err)
	}
}

// TestStoreRefusesForgeries: records a key holder could forge are each
// dropped, counted under their reason, and change nothing.
func TestStoreRefusesForgeries(t *testing.T) {
	const started = 1_700_000_000_000_000_000 // the victim's signed start
	setup := func(t *testing.T) *testStore {
		s := newTestStore(t, "self", 7)
		s.setOwnerLife("victim", 1, started, true)
		s.setOwner("rogue", 2, true)
		s.deliver(t, record{Entry: Entry{Key: "c/ip", Owner: "victim", Version: 10, Claimed: started + 5, Value: []byte("v")}, boot: 1})
		s.sent = nil
		return s
	}
	const want = "victim/c/ip=v@10"
	tests := []struct {
		name  string
		rec   record
		count func(StoreStats) uint64
	}{
		{"another node's owner", forge(record{Entry: Entry{Key: "c/other", Owner: "victim", Version: 11, Claimed: started + 6, Value: []byte("x")}, boot: 1}),
			func(s StoreStats) uint64 { return s.RecordsBadSignature }},
		{"update of another node's record", forge(record{Entry: Entry{Key: "c/ip", Owner: "victim", Version: 11, Claimed: started + 5, Value: []byte("x")}, boot: 1}),
			func(s StoreStats) uint64 { return s.RecordsBadSignature }},
		{"forged tombstone", forge(record{Entry: Entry{Key: "c/ip", Owner: "victim", Version: 11, Claimed: started + 5}, boot: 1, deleted: true}),
			func(s StoreStats) uint64 { return s.RecordsBadSignature }},
		{"unsigned", record{Entry: Entry{Key: "c/ip", Owner: "victim", Version: 12, Claimed: started + 5}, boot: 1, deleted: true},
			func(s StoreStats) uint64 { return s.RecordsBadSignature }},
		{"Claimed=1 by its own owner", signed(record{Entry: Entry{Key: "c/ip2", Owner: "victim", Version: 13, Claimed: 1, Value: []byte("x")}, boot: 1}),
			func(s StoreStats) uint64 { return s.RecordsBadClaim }},
		{"Claimed in the future", signed(record{Entry: Entry{Key: "c/ip3", Owner: "victim", Version: 14, Claimed: time.Unix(1_700_000_000, 0).Add(time.Hour).UnixNano(), Value: []byte("x")}, boot: 1}),
			func(s StoreStats) uint64 { return s.RecordsBadClaim }},
		{"replayed old version", signed(record{Entry: Entry{Key: "c/ip", Owner: "victim", Version: 9, Claimed: started + 5, Value: []byte("old")}, boot: 1}),
			func(s StoreStats) uint64 { return s.RecordsStale }},
		{"unknown signer", signed(record{Entry: Entry{Key: "c/ip", Owner: "stranger", Version: 1, Claimed: started, Value: []byte("x")}, boot: 1}),
			func(s StoreStats) uint64 { return s.RecordsUnknownSigner }},
		{"forged copy of our own entry", forge(record{Entry: Entry{Key: "mine", Owner: "self", Version: 99, Claimed: started}, boot: 7}),
			func(s StoreStats) uint64 { return s.RecordsBadSignature }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := setup(t)
			if tt.name == "unknown signer" {
				s.keyOf = func(name string) ([32]byte, bool) {
					if name == "stranger" {
						return [32]byte{}, false
					}
					return testKeyOf(name)
				}
			}
			before := s.Stats()
			s.deliverRaw(t, tt.rec)
			after := s.Stats()
			if got := tt.count(after) - tt.count(before); got != 1 {
				t.Errorf("counter moved by %d, want 1 (stats %+v)", got, after)
			}
			if after.RecordsApplied != before.RecordsApplied {
				t.Errorf("forgery applied: %+v", after)
			}
			if got := view(s.Store); got != want {
				t.Errorf("view = %q, want %q", got, want)
			}
			if len(s.sent) != 0 {
				t.Errorf("the store answered a forgery: %+v", s.sent)
			}
		})
	}
}

// TestStoreDropsEarlyClaimsOnMeta: a record taken in before its owner's
// metadata, claimed before the start that metadata then signs, goes.
func TestStoreDropsEarlyClaimsOnMeta(t *testing.T) {
	s := newTestStore(t, "self", 7)
	s.deliver(t, record{Entry: Entry{Key: "k", Owner: "a", Version: 1, Claimed: 1, Value: []byte("x")}, boot: 1},
		record{Entry: Entry{Key: "j", Owner: "a", Version: 2, Claimed: 500, Value: []byte("y")}, boot: 1})
	s.setOwnerLife("a", 1, 100, true)
	if got, want := view(s.Store), "a/j=y@2"; got != want {
		t.Fatalf("view = %q, want %q", got, want)
	}
	if st := s.Stats(); st.RecordsBadClaim != 1 {
		t.Fatalf("stats %+v, want one bad claim", st)
	}
}

// TestStoreHybridClock: a node whose wall clock is behind still orders a
// claim made after seeing another claim after it.
func TestStoreHybridClock(t *testing.T) {
	s := newTestStore(t, "self", 7)
	s.setOwner("a", 1, true)
	ahead := s.clock.Add(10 * time.Second).UnixNano()
	s.deliver(t, record{Entry: Entry{Key: "x", Owner: "a", Version: 1, Claimed: ahead, Value: []byte("a")}, boot: 1})
	e := s.Put("y", []byte("v"))
	if e.Claimed <= ahead {
		t.Fatalf("claim after seeing Claimed %d got %d", ahead, e.Claimed)
	}
}

// TestStoreFencesLostClaim: after a partition heals, the older competing
// claim wins and the newer one is withdrawn by its own store.
func TestStoreFencesLostClaim(t *testing.T) {
	s := newTestStore(t, "self", 7)
	// a claimed k first, on the other side of a partition (a is down
	// for us, so its entry is hidden and our Claim wins).
	s.setOwner("a", 1, false)
	s.deliver(t, record{Entry: Entry{Key: "k", Owner: "a", Version: 1, Claimed: s.clock.UnixNano() - 1, Value: []byte("a")}, boot: 1})
	won, err := s.Claim(t.Context(), "k", []byte("self"), 0)
	if err != nil || !won {
		t.Fatalf("claim: %v, %v", won, err)
	}
	s.sent = nil
	s.setOwner("a", 1, true) // the partition heals
	if _, ok := s.Get("self", "k"); ok {
		t.Fatal("lost claim still held")
	}
	if w, _ := s.Winner("k"); w.Owner != "a" {
		t.Fatalf("winner %+v, want a", w)
	}
	if f := s.Fenced(); len(f) != 1 || f[0] != "k" {
		t.Fatalf("fenced %v, want [k]", f)
	}
	if len(s.sent) != 1 || !s.sent[0].deleted || s.sent[0].Key != "k" {
		t.Fatalf("sent %+v, want our tombstone for k", s.sent)
	}
	if st := s.Stats(); st.ClaimsLost != 1 {
		t.Fatalf("stats %+v", st)
	}
	s.Delete("k")
	if f := s.Fenced(); len(f) != 0 {
		t.Fatalf("fenced after Delete: %v", f)
	}
	// A plain Put is not a claim: never fenced.
	s.Put("p", []byte("v"))
	s.deliver(t, record{Entry: Entry{Key: "p", Owner: "a", Version: 2, Claimed: 1, Value: []byte("a")}, boot: 1})
	if _, ok := s.Get("self", "p"); !ok {
		t.Fatal("plain Put withdrawn")
	}
}

func TestMetaSignature(t *testing.T) {
	sg := testSigner("n1")
	m := fullMeta(2)
	b, err := signMeta("n1", &m, sg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := verifyMeta("n1", b)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if !reflect.DeepEqual(got, m) || got.SigningKey != sg.pub {
		t.Fatalf("verified %+v, want %+v", got, m)
	}
	if _, err := verifyMeta("n2", b); !errors.Is(err, errMetaUnsigned) {
		t.Fatalf("under another name: %v", err)
	}
	for i := 2; i < len(b); i++ {
		bad := bytes.Clone(b)
		bad[i] ^= 1
		if _, err := verifyMeta("n1", bad); err == nil {
			t.Fatalf("flipping byte %d still verifies", i)
		}
	}
	v1 := fullMeta(1)
	v1.Started, v1.SigningKey, v1.Signature = 0, [32]byte{}, [64]byte{}
	enc, _ := v1.MarshalBinary()
	enc = append([]byte{1}, enc[1:len(enc)-8-32-64]...)
	if _, err := verifyMeta("n1", enc); !errors.Is(err, errMetaUnsigned) {
		t.Fatalf("version-1 metadata: %v", err)
	}
}

func TestPinsPersist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pins.json")
	p, err := loadPins(path)
	if err != nil {
		t.Fatal(err)
	}
	k1, k2 := testSigner("a").pub, testSigner("b").pub
	now := time.Unix(1_700_000_000, 0).UTC()
	if ok, err := p.check("a", k1, now); !ok || err != nil {
		t.Fatalf("first sight: %v, %v", ok, err)
	}
	if ok, _ := p.check("a", k2, now); ok {
		t.Fatal("changed key accepted")
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("pin file: %v, %v", fi, err)
	}
	q, err := loadPins(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := q.list(); len(got) != 1 || got[0] != (Pin{Name: "a", Key: k1, Since: now}) {
		t.Fatalf("reloaded %+v", got)
	}
	if ok, _ := q.check("a", k2, now); ok {
		t.Fatal("changed key accepted after reload")
	}
	if ok, err := q.remove("a"); !ok || err != nil {
		t.Fatalf("remove: %v, %v", ok, err)
	}
	if r, _ := loadPins(path); len(r.list()) != 0 {
		t.Fatalf("removed pin came back: %+v", r.list())
	}
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadPins(path); err == nil {
		t.Fatal("corrupt pin file accepted")
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
}

// TestClusterRogueMember: a member holding the cluster key gossips forged
// records through the real protocol. The honest nodes refuse and count
// each one, and their view of the victim does not change.
func TestClusterRogueMember(t *testing.T) {
	leaktest.Check(t)
	nodes := startCluster(t, 2)
	victim := nodes[1]
	e := victim.Store().Put("c/pn/10.240.0.5", []byte("victim"))
	poll.Until(t, 3*time.Second, "n1 sees the victim's entry", func() bool { return hasEntry(nodes[0], "n2", e.Key, "victim") })

	rogue := startNode(t, testConfig(t, "rogue"))
	join(t, rogue, nodes[0])
	poll.Until(t, 5*time.Second, "n1 sees the rogue", func() bool {
		n, ok := nodeNamed(nodes[0], "rogue")
		return ok && n.State == StateAlive && n.Identity == IdentityOK
	})
	boot := victim.meta.BootID
	now := time.Now().UnixNano()
	forged := []record{
		{Entry: Entry{Key: "c/pn/10.240.0.9", Owner: "n2", Version: e.Version + 1, Claimed: now, Value: []byte("rogue")}, boot: boot},
		{Entry: Entry{Key: e.Key, Owner: "n2", Version: e.Version + 2, Claimed: e.Claimed}, boot: boot, deleted: true},
	}
	before := nodes[0].Stats()
	for i := range forged {
		rogue.sign.signRecord(nil, &forged[i])
		rogue.queueBroadcast("forged"+forged[i].Key, encodeRecords(&forged[i]))
	}
	// The rogue's own record with Claimed=1: signed by the right key,
	// but before its own start.
	own := record{Entry: Entry{Key: e.Key, Owner: "rogue", Version: 1, Claimed: 1, Value: []byte("mine")}, boot: rogue.meta.BootID}
	rogue.sign.signRecord(nil, &own)
	rogue.queueBroadcast("own", encodeRecords(&own))

	poll.Until(t, 5*time.Second, "n1 counts the forgeries", func() bool {
		st := nodes[0].Stats()
		return st.RecordsBadSignature-before.RecordsBadSignature >= 2 && st.RecordsBadClaim-before.RecordsBadClaim >= 1
	})
	for _, c := range nodes {
		if !hasEntry(c, "n2", e.Key, "victim") {
			t.Errorf("%s lost the victim's entry", c.name)
		}
		if _, ok := c.Store().Get("n2", "c/pn/10.240.0.9"); ok {
			t.Errorf("%s shows a record forged in n2's name", c.name)
		}
		if w, ok := c.Store().Winner(e.Key); !ok || w.Owner != "n2" {
			t.Errorf("%s: winner of %s is %+v", c.name, e.Key, w)
		}
	}
	// The victim refuses the copies "of its own" records too, and does
	// not answer them.
	poll.Until(t, 5*time.Second, "the victim counts the forgeries in its name", func() bool {
		return victim.Stats().RecordsBadSignature >= 2
	})
	if !hasEntry(victim, "n2", e.Key, "victim") {
		t.Error("the victim lost its own entry")
	}
}

// TestClusterKeyChangeRefused: a node that comes back under a known name
// with another signing key is refused (its records are not merged) until
// the pin is removed.
func TestClusterKeyChangeRefused(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	cfg1 := testConfig(t, "n1")
	cfg1.PinFile = filepath.Join(dir, "pins.json")
	n1 := startNode(t, cfg1)
	old := startNode(t, testConfig(t, "n2"))
	join(t, old, n1)
	poll.Until(t, 5*time.Second, "n1 pins n2", func() bool { return len(n1.Pins()) == 1 })
	old.Kill()
	poll.Until(t, 5*time.Second, "n1 sees n2 dead", func() bool {
		n, _ := nodeNamed(n1, "n2")
		return n.State == StateDead
	})

	cfg := testConfig(t, "n2")
	_, cfg.SigningKey, _ = ed25519.GenerateKey(nil)
	impostor := startNode(t, cfg)
	join(t, impostor, n1)
	impostor.Store().Put("c/x", []byte("impostor"))
	poll.Until(t, 5*time.Second, "n1 refuses the new key", func() bool {
		n, _ := nodeNamed(n1, "n2")
		return n.Identity == IdentityKeyChanged && n1.Stats().MetaKeyChanged > 0
	})
	neverWithin(t, time.Second, "n1 merges the refused node's record", func() bool {
		_, ok := n1.Store().Get("n2", "c/x")
		return ok
	})
	if n, _ := nodeNamed(n1, "n2"); n.Meta.BootID == impostor.meta.BootID {
		t.Fatal("n1 took the refused node's metadata")
	}

	// The pin survives a restart of n1 (read back from its file).
	if p, err := loadPins(cfg1.PinFile); err != nil || len(p.list()) != 1 || p.list()[0].Key != old.sign.pub {
		t.Fatalf("pin file: %+v, %v", p, err)
	}
	if err := n1.Unpin("nobody"); !errors.Is(err, ErrNoPin) {
		t.Fatalf("unpin of an unknown name: %v", err)
	}
	if err := n1.Unpin("n2"); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, "n1 accepts n2's new key", func() bool {
		n, _ := nodeNamed(n1, "n2")
		return n.Identity == IdentityOK && n.Meta.BootID == impostor.meta.BootID && hasEntry(n1, "n2", "c/x", "impostor")
	})
	if p := n1.Pins(); len(p) != 1 || p[0].Key != impostor.sign.pub {
		t.Fatalf("pins after unpin %+v", p)
	}
}

// FuzzVerifyRecord: whatever the bytes, decoding never panics, and a
// record that verifies against the signer's key is the one it signed.
func FuzzVerifyRecord(f *testing.F) {
	sg := testSigner("n1")
	orig := record{Entry: Entry{Key: "c/pn/10.240.0.1", Owner: "n1", Version: 5, Claimed: 7, Value: []byte("value")}, boot: 3}
	sg.signRecord(nil, &orig)
	tomb := record{Entry: Entry{Key: "k", Owner: "n1", Version: 6, Claimed: 7}, boot: 3, deleted: true}
	sg.signRecord(nil, &tomb)
	f.Add(encodeRecords(&orig))
	f.Add(encodeRecords(&tomb))
	f.Add(encodeRecords(&orig, &tomb))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			return
		}
		for i := range m.records {
			r := &m.records[i]
			if _, ok := verifyRecord(nil, sg.pub, r); !ok {
				continue
			}
			if !reflect.DeepEqual(*r, orig) && !reflect.DeepEqual(*r, tomb) {
				t.Fatalf("forged record verifies: %+v", *r)
			}
		}
	})
}

func TestPinsBounded(t *testing.T) {
	p, err := loadPins("")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	for i := range maxPins {
		if ok, err := p.check(fmt.Sprintf("n%d", i), [32]byte{1}, now); !ok || err != nil {
			t.Fatalf("pin %d: %v, %v", i, ok, err)
		}
	}
	if ok, err := p.check("one-more", [32]byte{1}, now); ok || !errors.Is(err, errTooManyPins) {
		t.Fatalf("pin beyond the bound: %v, %v", ok, err)
	}
	if ok, _ := p.check("n0", [32]byte{1}, now); !ok {
		t.Fatal("a known name is refused once the table is full")
	}
}

// TestClusterIgnoresReplayedLife: n2's genuine metadata of an earlier life,
// replayed while its current life is up, would hide its entries on every
// node; it is ignored and counted instead.
func TestClusterIgnoresReplayedLife(t *testing.T) {
	leaktest.Check(t)
	nodes := startCluster(t, 2)
	n1, n2 := nodes[0], nodes[1]
	n2.Store().Put("c/x", []byte("v"))
	poll.Until(t, 3*time.Second, "n1 sees n2's entry", func() bool { return hasEntry(n1, "n2", "c/x", "v") })
	old := n2.meta
	old.BootID++
	old.Started -= int64(time.Hour)
	raw, err := signMeta("n2", &old, testSigner("n2"))
	if err != nil {
		t.Fatal(err)
	}
	node, _ := nodeNamed(n1, "n2")
	n1.peerUp("n2", node.Addr, raw)
	if n, _ := nodeNamed(n1, "n2"); n.Meta.BootID != n2.meta.BootID || n.Identity != IdentityOK {
		t.Fatalf("n1 took the replayed life: %+v", n)
	}
	if !hasEntry(n1, "n2", "c/x", "v") {
		t.Fatal("the replay hid n2's entry")
	}
	if st := n1.Stats(); st.MetaStale != 1 {
		t.Fatalf("stats %+v, want one stale meta", st)
	}
}
