package cluster

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"
)

// Store is a replicated map in which every node owns its own entries, keyed
// by (Owner, Key). Only the owner writes them, so merges never conflict:
//
//   - per (Owner, Key) the higher Version wins; at an equal version a
//     tombstone beats a live entry; anything else is a duplicate and ignored,
//     so delivery order and duplicates do not matter;
//   - versions are seeded from the owner's wall clock at start and only grow,
//     so a restarted owner's entries supersede its previous life's;
//   - an entry is visible only while its owner is alive (or suspect) in
//     memberlist's view AND carries the BootID of the owner's current
//     metadata. Entries of a dead or left owner are hidden at once and come
//     back if it returns alive with the same BootID; when the owner's BootID
//     changes, entries of other BootIDs are dropped. An entry arriving with
//     another BootID than the owner's current one is kept hidden (it may be
//     the owner's next life, ahead of its new metadata) and GC'd after ttl
//     if that metadata never comes;
//   - the owner is the authority on its own entries: a peer's copy of one of
//     our entries that we no longer have (its tombstone was already GC'd) is
//     withdrawn with a fresh tombstone instead of being accepted;
//   - every record carries its owner's signature (identity.go), checked
//     against the key pinned for the owner's name before anything is merged:
//     records of unknown signers, with bad signatures, or whose Claimed lies
//     before the owner's start or beyond maxClockSkew in our future are
//     dropped and counted;
//   - Claimed is a hybrid logical clock: the owner's wall clock, but never
//     below a Claimed it has merged, so a claim made after seeing another
//     orders after it whatever the clocks say. A claim made by Claim that
//     later loses (a partition heals and an older claim appears) is fenced:
//     the store withdraws it itself and lists the key in Fenced.
//
// Changes go out as single-record gossip broadcasts (re-gossiped by every
// node that learns something new) and the full state is repaired by
// memberlist's periodic push-pull.
//
// Readers that derive state from the store follow its journal
// (ChangedSince) rather than re-reading it, and List reads only the
// directories of keys its prefix reaches (store_index.go).
//
// Locking: mu guards everything below it. Broadcasts are queued and change
// notifications sent after mu is released; the store never calls into
// memberlist or the Cluster while holding mu.
type Store struct {
	self    string
	boot    uint64
	now     func() time.Time
	ttl     time.Duration                       // tombstones, orphans and the graveyard live this long
	out     func(name string, msg []byte)       // queue a gossip broadcast; nil when standalone
	changed func()                              // "take a new snapshot"; nil when standalone
	sign    *signer                             // signs our records
	keyOf   func(owner string) ([32]byte, bool) // a peer's pinned signing key; nil = none

	mu        sync.Mutex
	ver       uint64                      // last version handed out for our own entries
	recs      map[string]map[string]*slot // key → owner → slot
	nrecs     int                         // slots in recs
	byOwner   map[string]int              // slots in recs per owner
	quota     int                         // most slots one other owner may hold (maxRecordsPerOwner)
	dirs      map[string]*keyDir          // index of recs' keys by directory; see List
	journal   journal                     // changed keys; see ChangedSince
	owners    map[string]ownerState       // memberlist's view of every owner but us
	graveyard map[ownerBoot]time.Time     // reaped owner lives → expiry; their entries are refused
	hlc       int64                       // last Claimed handed out or merged (unix nanos)
	claims    map[string]struct{}         // our keys put by Claim: fenced if they lose later
	fenced    map[string]time.Time        // our claims withdrawn because they lost → when
	scratch   []byte                      // signing and verification buffer
	st        storeCounters
}

// Entry is one visible value of the store.
type Entry struct {
	Key     string
	Owner   string
	Version uint64
	Claimed int64 // unix nanos when first put by the owner; kept across updates of the same key
	Value   []byte
}

type slot struct {
	record
	updated time.Time // local time of the last change, for GC
}

type ownerState struct {
	boot    uint64
	started int64 // the life's start from its signed metadata (unix nanos); 0 = unknown
	up      bool  // alive or suspect
}

type ownerBoot struct {
	name string
	boot uint64
}

type storeCounters struct {
	msgsReceived, msgsBadVersion, msgsMalformed uint64
	applied, duplicate, stale, rejected         uint64
	badSignature, unknownSigner, badClaim       uint64
	claimsLost, claimsRaced                     uint64
}

// maxRecords bounds what peers can make us hold. A daemon holds a few
// records per container, so hitting it means something is wrong.
const maxRecords = 200_000

// maxRecordsPerOwner bounds what one peer can make us hold, so that a
// member filling the store (AUDIT D10) cannot crowd out every other
// node's records: it reaches its own quota long before maxRecords.
const maxRecordsPerOwner = maxRecords / 4

// maxClockSkew is how far in our future a peer's Claimed may lie: clocks
// of cluster nodes are expected to agree to within this.
const maxClockSkew = 30 * time.Second

func newStore(self string, boot uint64, ttl time.Duration) *Store {
	return &Store{
		self:      self,
		boot:      boot,
		now:       time.Now,
		ttl:       ttl,
		recs:      make(map[string]map[string]*slot),
		byOwner:   make(map[string]int),
		quota:     maxRecordsPerOwner,
		dirs:      make(map[string]*keyDir),
		owners:    make(map[string]ownerState),
		graveyard: make(map[ownerBoot]time.Time),
		claims:    make(map[string]struct{}),
		fenced:    make(map[string]time.Time),
		sign:      mustRandomSigner(),
	}
}

// mustRandomSigner gives a standalone store a key of its own; a Cluster
// replaces it with the node's.
func mustRandomSigner() *signer {
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		panic(fmt.Sprintf("cluster: generate signing key: %v", err))
	}
	s, _ := newSigner(priv)
	return s
}

// Put stores value under key with this node as owner and gossips it. It
// keeps Claimed of a live entry it replaces. Put panics if CheckEntry
// refuses key or value: that is a caller bug, like an index out of range.
func (s *Store) Put(key string, value []byte) Entry {
	if err := CheckEntry(key, value); err != nil {
		panic(fmt.Sprintf("cluster: Store.Put: %v", err))
	}
	s.mu.Lock()
	now := s.now()
	r := &slot{record: record{Entry: Entry{
		Key:     key,
		Owner:   s.self,
		Version: s.nextVersionLocked(now),
		Value:   append([]byte(nil), value...),
	}, boot: s.boot}, updated: now}
	if cur := s.recs[key][s.self]; cur != nil && !cur.deleted {
		r.Claimed = cur.Claimed
	} else {
		r.Claimed = s.nextClaimLocked(now)
		delete(s.fenced, key)
	}
	s.signLocked(&r.record)
	s.setLocked(r)
	e := r.entry()
	s.mu.Unlock()
	s.publish(&r.record)
	return e
}

// Delete replaces our entry for key with a tombstone. Deleting a key we do
// not hold is a no-op.
func (s *Store) Delete(key string) {
	s.mu.Lock()
	delete(s.fenced, key)
	cur := s.recs[key][s.self]
	if cur == nil || cur.deleted {
		s.mu.Unlock()
		return
	}
	r := s.tombstoneLocked(cur, s.now())
	s.mu.Unlock()
	s.publish(&r.record)
}

// tombstoneLocked replaces our live slot cur with a signed tombstone.
func (s *Store) tombstoneLocked(cur *slot, now time.Time) *slot {
	delete(s.claims, cur.Key)
	r := &slot{record: record{Entry: Entry{
		Key:     cur.Key,
		Owner:   s.self,
		Version: s.nextVersionLocked(now),
		Claimed: cur.Claimed,
	}, boot: s.boot, deleted: true}, updated: now}
	s.signLocked(&r.record)
	s.setLocked(r)
	return r
}

func (s *Store) signLocked(r *record) { s.scratch = s.sign.signRecord(s.scratch, r) }

// Get returns the visible live entry of owner for key.
func (s *Store) Get(owner, key string) (Entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.recs[key][owner]
	if r == nil || !s.visibleLocked(r) {
		return Entry{}, false
	}
	return r.entry(), true
}

// Winner returns, among the visible live entries with this key (from any
// owner), the one with the smallest (Claimed, Owner): the first claim wins,
// ties go to the smaller owner name. The daemon uses it to make addresses,
// container numbers and VNIs unique cluster-wide.
func (s *Store) Winner(key string) (Entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var best *slot
	for _, r := range s.recs[key] {
		if !s.visibleLocked(r) {
			continue
		}
		if best == nil || claimBefore(r, best) {
			best = r
		}
	}
	if best == nil {
		return Entry{}, false
	}
	return best.entry(), true
}

// Claim puts value under key, waits settle (long enough for gossip to bring
// competing claims; see Cluster.SettleTime) and reports whether we are the
// Winner. If not, the caller Deletes and tries another key.
//
// A key already won by another visible owner is not put at all (false, nil):
// that keeps a node with a slow clock from stealing a claim it can see. If
// ctx ends during settle, a claim this call created is withdrawn and
// ctx.Err() returned.
//
// After a partition heals, or when a falsely-dead owner returns, an older
// competing claim can reappear and win later: the store then withdraws
// ours itself (a tombstone, counted in ClaimsLost) and lists the key in
// Fenced until it is Put or Deleted again; callers stop using what the
// claim stood for when they see it there.
func (s *Store) Claim(ctx context.Context, key string, value []byte, settle time.Duration) (bool, error) {
	if err := CheckEntry(key, value); err != nil {
		return false, fmt.Errorf("claim %q: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("claim %q: %w", key, err)
	}
	w, held := s.Winner(key)
	if held && w.Owner != s.self {
		s.mu.Lock()
		s.st.claimsRaced++
		s.mu.Unlock()
		return false, nil
	}
	s.Put(key, value)
	s.mu.Lock()
	if cur := s.recs[key][s.self]; cur != nil && !cur.deleted {
		s.claims[key] = struct{}{}
	}
	s.mu.Unlock()
	if settle > 0 {
		t := time.NewTimer(settle)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			if !held {
				s.Delete(key)
			}
			return false, fmt.Errorf("claim %q: %w", key, ctx.Err())
		}
	}
	w, ok := s.Winner(key)
	won := ok && w.Owner == s.self
	if !won {
		// Lost while settling: the caller retries; nothing to report.
		s.mu.Lock()
		delete(s.fenced, key)
		s.st.claimsRaced++
		s.mu.Unlock()
	}
	return won, nil
}

// Fenced returns the keys whose claims (made by Claim) this store withdrew
// because an older competing claim won after the fact, typically when a
// partition healed. A key leaves the list when it is Put or Deleted again.
// Whoever holds what the claim stood for (an address, a number) must stop
// using it.
func (s *Store) Fenced() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.fenced))
	for k := range s.fenced {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// fenceLocked withdraws our claim on key if another visible entry now
// wins it, and returns the tombstone to publish.
func (s *Store) fenceLocked(key string, now time.Time) *record {
	if _, ok := s.claims[key]; !ok {
		return nil
	}
	cur := s.recs[key][s.self]
	if cur == nil || cur.deleted {
		delete(s.claims, key)
		return nil
	}
	for _, r := range s.recs[key] {
		if r.Owner != s.self && s.visibleLocked(r) && claimBefore(r, cur) {
			t := s.tombstoneLocked(cur, now)
			s.fenced[key] = now
			s.st.claimsLost++
			return &t.record
		}
	}
	return nil
}

// claimBefore is Winner's order: the smaller (Claimed, Owner) wins.
func claimBefore(a, b *slot) bool {
	return a.Claimed < b.Claimed || (a.Claimed == b.Claimed && a.Owner < b.Owner)
}

// nextClaimLocked is the hybrid logical clock: the wall clock, but always
// after every Claimed handed out or merged before.
func (s *Store) nextClaimLocked(now time.Time) int64 {
	c := now.UnixNano()
	if c <= s.hlc {
		c = s.hlc + 1
	}
	s.hlc = c
	return c
}

func (r *slot) entry() Entry {
	e := r.Entry
	if r.Value != nil {
		e.Value = append([]byte(nil), r.Value...)
	}
	return e
}

func (s *Store) nextVersionLocked(now time.Time) uint64 {
	v := uint64(now.UnixNano())
	if v <= s.ver {
		v = s.ver + 1
	}
	s.ver = v
	return v
}

// setLocked stores r in its slot and logs the change.
func (s *Store) setLocked(r *slot) {
	m := s.recs[r.Key]
	if m == nil {
		m = make(map[string]*slot)
		s.recs[r.Key] = m
		s.indexLocked(r.Key)
	}
	if m[r.Owner] == nil {
		s.nrecs++
		s.byOwner[r.Owner]++
	}
	m[r.Owner] = r
	s.logLocked(r.Key)
}

// deleteLocked drops r's slot. Callers log the change if r was visible.
func (s *Store) deleteLocked(r *slot) {
	m := s.recs[r.Key]
	if m[r.Owner] != nil {
		s.nrecs--
		if s.byOwner[r.Owner]--; s.byOwner[r.Owner] <= 0 {
			delete(s.byOwner, r.Owner)
		}
	}
	delete(m, r.Owner)
	if len(m) == 0 {
		delete(s.recs, r.Key)
		s.unindexLocked(r.Key)
	}
}

func (s *Store) visibleLocked(r *slot) bool {
	o, ok := s.owners[r.Owner]
	return s.visibleAsLocked(r, o, ok)
}

// visibleAsLocked says whether r is visible when its owner's state is o
// (known: memberlist knows the owner).
func (s *Store) visibleAsLocked(r *slot, o ownerState, known bool) bool {
	if r.deleted {
		return false
	}
	if r.Owner == s.self {
		return true
	}
	return known && o.up && o.boot == r.boot
}

// publish gossips one record and signals a change. Called without mu.
func (s *Store) publish(r *record) {
	if s.out != nil {
		s.out(r.Owner+"\x00"+r.Key, encodeRecords(r))
	}
	s.notify()
}

func (s *Store) notify() {
	if s.changed != nil {
		s.changed()
	}
}

type mergeResult int

const (
	mergeApplied mergeResult = iota
	mergeDuplicate
	mergeStale // an older version than we hold: a late copy or a replay
	mergeRejected
	mergeBadSignature
	mergeUnknownSigner
	mergeBadClaim
)

// mergeLocked applies one remote record. It returns what happened and, when
// we must answer (a stale copy of our own entry), a record to publish.
func (s *Store) mergeLocked(r *record, now time.Time) (mergeResult, *record) {
	if r.Owner == s.self {
		return s.mergeSelfLocked(r, now)
	}
	if _, dead := s.graveyard[ownerBoot{r.Owner, r.boot}]; dead {
		return mergeRejected, nil
	}
	cur := s.recs[r.Key][r.Owner]
	// Copies that would change nothing are answered before the signature
	// is checked: push-pull brings mostly those, and they are cheap.
	if cur != nil && r.Version < cur.Version {
		return mergeStale, nil
	}
	if cur != nil && r.Version == cur.Version && (cur.deleted || !r.deleted) {
		return mergeDuplicate, nil
	}
	if r.Claimed > now.Add(maxClockSkew).UnixNano() {
		return mergeBadClaim, nil
	}
	if o, ok := s.owners[r.Owner]; ok && o.boot == r.boot && r.Claimed < o.started {
		return mergeBadClaim, nil
	}
	if cur == nil && (s.nrecs >= maxRecords || s.byOwner[r.Owner] >= s.quota) {
		return mergeRejected, nil
	}
	if res := s.verifyLocked(r); res != mergeApplied {
		return res, nil
	}
	s.setLocked(&slot{record: *r, updated: now})
	s.hlc = max(s.hlc, r.Claimed)
	return mergeApplied, nil
}

// verifyLocked checks r's signature against its owner's pinned key.
func (s *Store) verifyLocked(r *record) mergeResult {
	var pub [32]byte
	if r.Owner == s.self {
		pub = s.sign.pub
	} else {
		var ok bool
		if s.keyOf != nil {
			pub, ok = s.keyOf(r.Owner)
		}
		if !ok {
			return mergeUnknownSigner
		}
	}
	var good bool
	s.scratch, good = verifyRecord(s.scratch, pub, r)
	if !good {
		return mergeBadSignature
	}
	return mergeApplied
}

// mergeSelfLocked handles a peer's copy of one of our own entries. We are
// the only writer, so our state is the truth: copies of an older life are
// refused, and a copy newer than what we hold can only be an entry whose
// tombstone we already GC'd, so we withdraw it again.
func (s *Store) mergeSelfLocked(r *record, now time.Time) (mergeResult, *record) {
	if r.boot != s.boot {
		return mergeRejected, nil
	}
	cur := s.recs[r.Key][s.self]
	if cur != nil && cur.Version > r.Version {
		return mergeStale, nil
	}
	if cur != nil && cur.Version == r.Version {
		return mergeDuplicate, nil
	}
	// Newer than anything we hold: genuine only if we signed it (an entry
	// whose tombstone we GC'd); a forgery must not make us answer.
	if res := s.verifyLocked(r); res != mergeApplied {
		return res, nil
	}
	s.ver = max(s.ver, r.Version)
	if r.deleted {
		return mergeDuplicate, nil
	}
	t := &slot{record: record{Entry: Entry{
		Key:     r.Key,
		Owner:   s.self,
		Version: s.nextVersionLocked(now),
		Claimed: r.Claimed,
	}, boot: s.boot, deleted: true}, updated: now}
	s.signLocked(&t.record)
	s.setLocked(t)
	return mergeRejected, &t.record
}

// handleMessage decodes and applies a store message from a peer. fromGossip
// says it came as a broadcast: records that are news to us are then
// re-gossiped, so an update spreads epidemically rather than only from its
// owner. It never blocks beyond mu.
func (s *Store) handleMessage(b []byte, fromGossip bool) (m message, err error) {
	m, err = decodeMessage(b)
	s.mu.Lock()
	s.st.msgsReceived++
	switch {
	case errors.Is(err, errWireVersion):
		s.st.msgsBadVersion++
	case err != nil:
		s.st.msgsMalformed++
	}
	if err != nil || m.typ == msgBye {
		s.mu.Unlock()
		return m, err
	}
	now := s.now()
	var replies, regossip []*record
	changed := false
	for i := range m.records {
		r := &m.records[i]
		res, reply := s.mergeLocked(r, now)
		switch res {
		case mergeApplied:
			s.st.applied++
			changed = true
			if fromGossip {
				regossip = append(regossip, r)
			}
			if t := s.fenceLocked(r.Key, now); t != nil {
				replies = append(replies, t)
			}
		case mergeDuplicate:
			s.st.duplicate++
		case mergeStale:
			s.st.stale++
		case mergeRejected:
			s.st.rejected++
		case mergeBadSignature:
			s.st.badSignature++
		case mergeUnknownSigner:
			s.st.unknownSigner++
		case mergeBadClaim:
			s.st.badClaim++
		}
		if reply != nil {
			replies = append(replies, reply)
			changed = true
		}
	}
	s.mu.Unlock()
	if s.out != nil {
		for _, r := range append(regossip, replies...) {
			s.out(r.Owner+"\x00"+r.Key, encodeRecords(r))
		}
	}
	if changed {
		s.notify()
	}
	return m, nil
}

// localState encodes everything worth repairing a peer with: our entries,
// and those of every known owner under its current BootID, tombstones
// included. Orphans (unknown owner or another BootID) stay home.
func (s *Store) localState() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	recs := make([]*record, 0, s.nrecs)
	for _, owners := range s.recs {
		for _, r := range owners {
			if r.Owner != s.self {
				if o, ok := s.owners[r.Owner]; !ok || o.boot != r.boot {
					continue
				}
			}
			recs = append(recs, &r.record)
		}
	}
	return encodeState(recs)
}

// setOwner records memberlist's view of a peer: its current BootID and
// whether it is up (alive or suspect). Entries of any other BootID of that
// owner are dropped.
func (s *Store) setOwner(name string, boot uint64, up bool) { s.setOwnerLife(name, boot, 0, up) }

// setOwnerLife is setOwner with the start time from the owner's signed
// metadata: entries of that life claimed before it (taken in before the
// metadata came) are dropped too. Claims of ours that an entry now visible
// beats are fenced.
func (s *Store) setOwnerLife(name string, boot uint64, started int64, up bool) {
	if name == s.self {
		return
	}
	s.mu.Lock()
	now := s.now()
	prev, known := s.owners[name]
	s.owners[name] = ownerState{boot: boot, started: started, up: up}
	if up {
		delete(s.graveyard, ownerBoot{name, boot})
	}
	var fence []string
	for key, owners := range s.recs {
		r := owners[name]
		if r == nil {
			continue
		}
		was := known && prev.up && prev.boot == r.boot && !r.deleted
		if r.boot == boot && r.Claimed < started {
			s.st.badClaim++
			s.deleteLocked(r)
			if was {
				s.logLocked(key)
			}
			continue
		}
		is := up && boot == r.boot && !r.deleted
		if r.boot != boot {
			s.deleteLocked(r)
		}
		if was != is {
			s.logLocked(key)
		}
		if is && !was {
			fence = append(fence, key)
		}
	}
	var replies []*record
	for _, key := range fence {
		if t := s.fenceLocked(key, now); t != nil {
			replies = append(replies, t)
		}
	}
	s.mu.Unlock()
	for _, r := range replies {
		s.publish(r)
	}
	s.notify()
}

// forgetOwner drops a reaped owner and all its entries, and refuses that
// life's entries for ttl so peers that reap later cannot gossip them back.
func (s *Store) forgetOwner(name string) {
	if name == s.self {
		return
	}
	s.mu.Lock()
	o, ok := s.owners[name]
	delete(s.owners, name)
	if ok {
		s.graveyard[ownerBoot{name, o.boot}] = s.now().Add(s.ttl)
	}
	for key, owners := range s.recs {
		if r := owners[name]; r != nil {
			visible := s.visibleAsLocked(r, o, ok)
			s.deleteLocked(r)
			if visible {
				s.logLocked(key)
			}
		}
	}
	s.mu.Unlock()
	s.notify()
}

// gc drops tombstones older than ttl, orphans (entries of unknown owners or
// of another BootID) not refreshed for ttl, and expired graveyard entries.
func (s *Store) gc() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	cutoff := now.Add(-s.ttl)
	for _, owners := range s.recs {
		for _, r := range owners {
			if !r.updated.Before(cutoff) {
				continue
			}
			orphan := false
			if r.Owner != s.self {
				o, ok := s.owners[r.Owner]
				orphan = !ok || o.boot != r.boot
			}
			if r.deleted || orphan {
				s.deleteLocked(r)
			}
		}
	}
	for k, exp := range s.graveyard {
		if now.After(exp) {
			delete(s.graveyard, k)
		}
	}
}

// StoreStats are the store's counters and sizes.
type StoreStats struct {
	MsgsReceived     uint64 // store messages that reached the decoder (gossip and push-pull)
	MsgsBadVersion   uint64 // dropped: unknown wire version
	MsgsMalformed    uint64 // dropped: garbage, truncated or over the limits
	RecordsApplied   uint64 // records that changed our state
	RecordsDuplicate uint64 // records we already had (duplicates, push-pull)
	RecordsStale     uint64 // records older than the version we hold (late copies, replays)
	RecordsRejected  uint64 // records refused: copies of our own entries, reaped owners, over maxRecords or the owner's quota
	// Records dropped by the identity checks (identity.go); none of them is
	// ever merged.
	RecordsBadSignature  uint64 // the signature is not the owner's
	RecordsUnknownSigner uint64 // no key pinned for the owner yet (push-pull repairs honest ones)
	RecordsBadClaim      uint64 // Claimed before the owner's start or beyond maxClockSkew ahead
	ClaimsLost           uint64 // our claims fenced after the fact (see Fenced)
	ClaimsRaced          uint64 // Claim calls another owner won, before or while settling
	Entries              int    // visible live entries
	Hidden               int    // live entries not visible (owner down, unknown or another BootID)
	Tombstones           int
}

// Stats returns the store's counters and current sizes.
func (s *Store) Stats() StoreStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := StoreStats{
		MsgsReceived:     s.st.msgsReceived,
		MsgsBadVersion:   s.st.msgsBadVersion,
		MsgsMalformed:    s.st.msgsMalformed,
		RecordsApplied:   s.st.applied,
		RecordsDuplicate: s.st.duplicate,
		RecordsStale:     s.st.stale,
		RecordsRejected:  s.st.rejected,

		RecordsBadSignature:  s.st.badSignature,
		RecordsUnknownSigner: s.st.unknownSigner,
		RecordsBadClaim:      s.st.badClaim,
		ClaimsLost:           s.st.claimsLost,
		ClaimsRaced:          s.st.claimsRaced,
	}
	for _, owners := range s.recs {
		for _, r := range owners {
			switch {
			case r.deleted:
				st.Tombstones++
			case s.visibleLocked(r):
				st.Entries++
			default:
				st.Hidden++
			}
		}
	}
	return st
}
