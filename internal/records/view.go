package records

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/dns"
)

// Store is what the container view reads of the cluster store.
type Store interface {
	ChangedSince(prefix string, since uint64) (keys []string, next uint64, ok bool)
	List(prefix string) []cluster.Entry
	Entries(key string) []cluster.Entry
	Winner(key string) (cluster.Entry, bool)
}

// ContainerView follows the container records of the cluster store (c/
// and n/ keys) through the store's journal (cluster.Store.ChangedSince),
// so that an attach, a detach or a cluster change costs work in
// proportion to the records that changed. Re-reading every record on each
// of them made filling a network quadratic: 1022 attaches took ~5 s, most
// of it listing and sorting the store.
//
// It keeps:
//   - the winning claim of every c/ key: what DNS answers, and what the
//     router and a gateway install for other nodes' containers;
//   - the addresses and numbers that other nodes claim, which local
//     allocation skips (Claimed);
//   - the DNS name index, edited copy-on-write and published atomically
//     (Names), so a query never waits for it.
//
// Readers that act on changes (the router's remote entries, the gateway
// NATs) follow it with a Follower of their own.
//
// Locking: mu guards everything below it. It is taken outside the store's
// lock (the daemon takes it under its registry lock, in Claimed); the view
// calls nothing but the store.
type ContainerView struct {
	self    string
	store   Store
	records ContainerCache
	names   atomic.Pointer[Names] // the last one published

	mu         sync.Mutex
	cursor     uint64
	winners    map[string]Claim              // c/ key → its winning claim
	others     map[string]bool               // c/ and n/ keys that another node claims (counted below)
	otherAddrs map[string]map[netip.Addr]int // pn → addresses other nodes claim → number of keys
	otherNums  map[string]map[int]int        // AppType → numbers other nodes claim → number of keys
}

// Claim is the winning claim of one c/ key: what the view's readers need
// of the container record.
type Claim struct {
	Owner  string // the node that holds the container
	PN     string
	Addr   netip.Addr
	App    string
	Type   string
	Number int
}

// keyClaim is a c/ key and its winning claim (ok false: none).
type keyClaim struct {
	key string
	c   Claim
	ok  bool
}

// NewContainerView returns the view of st for node self. It is empty
// until the first Sync.
func NewContainerView(self string, st Store) *ContainerView {
	v := &ContainerView{self: self, store: st}
	v.names.Store(&Names{})
	v.resetLocked()
	return v
}

func (v *ContainerView) resetLocked() {
	v.winners = make(map[string]Claim)
	v.others = make(map[string]bool)
	v.otherAddrs = make(map[string]map[netip.Addr]int)
	v.otherNums = make(map[string]map[int]int)
}

// Names returns the name index last published.
func (v *ContainerView) Names() *Names { return v.names.Load() }

// Containers implements dns.View from the name index last published.
func (v *ContainerView) Containers(pn, app string) []dns.Record {
	return v.names.Load().Containers(pn, app)
}

// Sync brings the view up to date with the store.
func (v *ContainerView) Sync() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.syncLocked()
}

func (v *ContainerView) syncLocked() {
	keys, next, ok := v.store.ChangedSince("", v.cursor)
	v.cursor = next
	if ok && len(keys) == 0 {
		return
	}
	ed := newNameEdit(v.names.Load())
	if !ok {
		// The journal no longer reaches back to our cursor: start over.
		v.resetLocked()
		ed = newNameEdit(&Names{})
		ed.changed = true // publish even an empty index: the old one is stale
		keys = nil
		for _, prefix := range []string{ContainerPrefix, NumberPrefix} {
			for _, e := range v.store.List(prefix) {
				if len(keys) == 0 || keys[len(keys)-1] != e.Key { // List is sorted by key
					keys = append(keys, e.Key)
				}
			}
		}
	}
	for _, k := range keys {
		v.updateLocked(k, ed)
	}
	if ed.changed {
		v.names.Store(ed.x)
	}
}

// updateLocked re-reads key from the store.
func (v *ContainerView) updateLocked(key string, ed *nameEdit) {
	isAddr := strings.HasPrefix(key, ContainerPrefix)
	if !isAddr && !strings.HasPrefix(key, NumberPrefix) {
		return
	}
	es := v.store.Entries(key) // Winner's order
	v.setOtherLocked(key, slices.ContainsFunc(es, func(e cluster.Entry) bool { return e.Owner != v.self }))
	if !isAddr {
		return
	}
	var now Claim
	has := false
	if len(es) > 0 {
		now, has = v.claimOf(es[0])
	}
	old, had := v.winners[key]
	if had == has && old == now {
		return
	}
	if had {
		ed.remove(old.PN, old.App, old.record())
		delete(v.winners, key)
	}
	if has {
		ed.add(now.PN, now.App, now.record())
		v.winners[key] = now
	}
}

// claimOf decodes a container record; false if its key or value is not
// one.
func (v *ContainerView) claimOf(e cluster.Entry) (Claim, bool) {
	pn, addr, ok := ParseContainerKey(e.Key)
	if !ok {
		return Claim{}, false
	}
	rec, ok := v.records.Decode(e)
	if !ok {
		return Claim{}, false
	}
	return Claim{Owner: e.Owner, PN: pn, Addr: addr, App: rec.App, Type: rec.Type, Number: rec.Number}, true
}

func (c Claim) record() dns.Record {
	return dns.Record{Type: c.Type, Number: c.Number, Addr: c.Addr}
}

// setOtherLocked records whether another node claims key.
func (v *ContainerView) setOtherLocked(key string, other bool) {
	if v.others[key] == other {
		return
	}
	d := 1
	if !other {
		d = -1
	}
	if pn, addr, ok := ParseContainerKey(key); ok {
		v.otherAddrs[pn] = count(v.otherAddrs[pn], addr, d)
		if len(v.otherAddrs[pn]) == 0 {
			delete(v.otherAddrs, pn)
		}
	} else if at, n, ok := ParseNumberKey(key); ok {
		v.otherNums[at] = count(v.otherNums[at], n, d)
		if len(v.otherNums[at]) == 0 {
			delete(v.otherNums, at)
		}
	} else {
		return // neither an address nor a number: nothing to skip
	}
	if other {
		v.others[key] = true
	} else {
		delete(v.others, key)
	}
}

func count[K comparable](m map[K]int, k K, d int) map[K]int {
	if m == nil {
		m = make(map[K]int)
	}
	if m[k] += d; m[k] <= 0 {
		delete(m, k)
	}
	return m
}

// Claimed returns the addresses of pn and the numbers of (app, typ) that
// other nodes claim (also losing claims not withdrawn yet), so that local
// allocation skips them. Its cost grows with those, not with the
// containers of this node.
func (v *ContainerView) Claimed(pn, app, typ string) (map[netip.Addr]bool, map[int]bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.syncLocked()
	addrs := make(map[netip.Addr]bool, len(v.otherAddrs[pn]))
	for a := range v.otherAddrs[pn] {
		addrs[a] = true
	}
	nums := make(map[int]bool, len(v.otherNums[AppType(app, typ)]))
	for n := range v.otherNums[AppType(app, typ)] {
		nums[n] = true
	}
	return addrs, nums
}

// Listed is a container record of another node as listings show it.
type Listed struct {
	Owner string
	PN    string
	Addr  netip.Addr
	Container
}

// Others lists the containers that other live nodes hold: the winning
// claims of c/ keys not owned by this node, with their whole records.
func (v *ContainerView) Others() []Listed {
	var out []Listed
	for _, e := range v.store.List(ContainerPrefix) {
		if e.Owner == v.self {
			continue
		}
		if w, ok := v.store.Winner(e.Key); !ok || w.Owner != e.Owner {
			continue // a losing claim, about to be withdrawn
		}
		pn, addr, ok := ParseContainerKey(e.Key)
		if !ok {
			continue
		}
		rec, ok := v.records.Decode(e)
		if !ok {
			continue
		}
		out = append(out, Listed{Owner: e.Owner, PN: pn, Addr: addr, Container: rec})
	}
	return out
}

// changes returns the c/ keys that changed since *cursor and advances it.
// all is true when the journal no longer reaches back to *cursor: the
// caller must then look at every key. The view is synced after the
// journal is read, so lookup reflects at least these changes.
func (v *ContainerView) changes(cursor *uint64) (keys []string, all bool) {
	keys, next, ok := v.store.ChangedSince(ContainerPrefix, *cursor)
	*cursor = next
	v.mu.Lock()
	defer v.mu.Unlock()
	v.syncLocked()
	if ok {
		return keys, false
	}
	return v.keysLocked(), true
}

// keys returns every c/ key with a winner.
func (v *ContainerView) keys() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.keysLocked()
}

func (v *ContainerView) keysLocked() []string {
	keys := make([]string, 0, len(v.winners))
	for k := range v.winners {
		keys = append(keys, k)
	}
	return keys
}

// lookup returns the winning claims of keys as the view holds them now.
func (v *ContainerView) lookup(keys []string) []keyClaim {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]keyClaim, len(keys))
	for i, k := range keys {
		c, ok := v.winners[k]
		out[i] = keyClaim{key: k, c: c, ok: ok}
	}
	return out
}
