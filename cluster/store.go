package cluster

import (
	"context"
	"errors"
	"fmt"
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
//     withdrawn with a fresh tombstone instead of being accepted.
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
	ttl     time.Duration                 // tombstones, orphans and the graveyard live this long
	out     func(name string, msg []byte) // queue a gossip broadcast; nil when standalone
	changed func()                        // "take a new snapshot"; nil when standalone

	mu        sync.Mutex
	ver       uint64                      // last version handed out for our own entries
	recs      map[string]map[string]*slot // key → owner → slot
	nrecs     int                         // slots in recs
	dirs      map[string]*keyDir          // index of recs' keys by directory; see List
	journal   journal                     // changed keys; see ChangedSince
	owners    map[string]ownerState       // memberlist's view of every owner but us
	graveyard map[ownerBoot]time.Time     // reaped owner lives → expiry; their entries are refused
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
	boot uint64
	up   bool // alive or suspect
}

type ownerBoot struct {
	name string
	boot uint64
}

type storeCounters struct {
	msgsReceived, msgsBadVersion, msgsMalformed uint64
	applied, duplicate, rejected                uint64
}

// maxRecords bounds what peers can make us hold. A daemon holds a few
// records per container, so hitting it means something is wrong.
const maxRecords = 200_000

func newStore(self string, boot uint64, ttl time.Duration) *Store {
	return &Store{
		self:      self,
		boot:      boot,
		now:       time.Now,
		ttl:       ttl,
		recs:      make(map[string]map[string]*slot),
		dirs:      make(map[string]*keyDir),
		owners:    make(map[string]ownerState),
		graveyard: make(map[ownerBoot]time.Time),
	}
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
		Claimed: now.UnixNano(),
		Value:   append([]byte(nil), value...),
	}, boot: s.boot}, updated: now}
	if cur := s.recs[key][s.self]; cur != nil && !cur.deleted {
		r.Claimed = cur.Claimed
	}
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
	cur := s.recs[key][s.self]
	if cur == nil || cur.deleted {
		s.mu.Unlock()
		return
	}
	now := s.now()
	r := &slot{record: record{Entry: Entry{
		Key:     key,
		Owner:   s.self,
		Version: s.nextVersionLocked(now),
		Claimed: cur.Claimed,
	}, boot: s.boot, deleted: true}, updated: now}
	s.setLocked(r)
	s.mu.Unlock()
	s.publish(&r.record)
}

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
		if best == nil || r.Claimed < best.Claimed || (r.Claimed == best.Claimed && r.Owner < best.Owner) {
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
// competing claim can reappear and win later: callers that must stay unique
// re-check Winner when Changes fires.
func (s *Store) Claim(ctx context.Context, key string, value []byte, settle time.Duration) (bool, error) {
	if err := CheckEntry(key, value); err != nil {
		return false, fmt.Errorf("claim %q: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("claim %q: %w", key, err)
	}
	w, held := s.Winner(key)
	if held && w.Owner != s.self {
		return false, nil
	}
	s.Put(key, value)
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
	return ok && w.Owner == s.self, nil
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
	}
	m[r.Owner] = r
	s.logLocked(r.Key)
}

// deleteLocked drops r's slot. Callers log the change if r was visible.
func (s *Store) deleteLocked(r *slot) {
	m := s.recs[r.Key]
	if m[r.Owner] != nil {
		s.nrecs--
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
	mergeRejected
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
	if cur != nil && (r.Version < cur.Version || (r.Version == cur.Version && (cur.deleted || !r.deleted))) {
		return mergeDuplicate, nil
	}
	if cur == nil && s.nrecs >= maxRecords {
		return mergeRejected, nil
	}
	s.setLocked(&slot{record: *r, updated: now})
	return mergeApplied, nil
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
	if cur != nil && cur.Version >= r.Version {
		return mergeDuplicate, nil
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
		case mergeDuplicate:
			s.st.duplicate++
		case mergeRejected:
			s.st.rejected++
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
func (s *Store) setOwner(name string, boot uint64, up bool) {
	if name == s.self {
		return
	}
	s.mu.Lock()
	prev, known := s.owners[name]
	s.owners[name] = ownerState{boot: boot, up: up}
	if up {
		delete(s.graveyard, ownerBoot{name, boot})
	}
	for key, owners := range s.recs {
		r := owners[name]
		if r == nil {
			continue
		}
		was := known && prev.up && prev.boot == r.boot && !r.deleted
		is := up && boot == r.boot && !r.deleted
		if r.boot != boot {
			s.deleteLocked(r)
		}
		if was != is {
			s.logLocked(key)
		}
	}
	s.mu.Unlock()
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
	RecordsDuplicate uint64 // records we already had (duplicates, out-of-order copies, push-pull)
	RecordsRejected  uint64 // records refused: copies of our own entries, reaped owners, over maxRecords
	Entries          int    // visible live entries
	Hidden           int    // live entries not visible (owner down, unknown or another BootID)
	Tombstones       int
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
		RecordsRejected:  s.st.rejected,
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
