package daemon

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/dns"
)

// containerView follows the container records of the cluster store (c/
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
//     allocation skips (claimed);
//   - the DNS name index, edited copy-on-write and published through
//     publish, so a query never waits for it.
//
// Readers that act on changes (the router's remote entries, the gateway
// NATs) keep their own journal cursor: changes tells them which keys to
// look at, lookup what those keys hold now.
//
// Locking: mu guards everything below it. It is taken under Daemon.mu
// (claimed) and outside the store's lock; the view calls nothing else.
type containerView struct {
	self    string
	store   *cluster.Store
	records *recordCache
	publish func(*nameIndex)

	mu         sync.Mutex
	cursor     uint64
	winners    map[string]viewEntry          // c/ key → its winning claim
	others     map[string]bool               // c/ and n/ keys that another node claims (counted below)
	otherAddrs map[string]map[netip.Addr]int // pn → addresses other nodes claim → number of keys
	otherNums  map[string]map[int]int        // appTypeKey → numbers other nodes claim → number of keys
	names      *nameIndex                    // the last one published
}

// viewEntry is the winning claim of one c/ key: what its readers need of
// the container record.
type viewEntry struct {
	owner  string
	pn     string
	addr   netip.Addr
	app    string
	typ    string
	number int
}

// keyWinner is a c/ key and its winning claim (ok false: none).
type keyWinner struct {
	key string
	e   viewEntry
	ok  bool
}

func newContainerView(self string, st *cluster.Store, rc *recordCache, publish func(*nameIndex)) *containerView {
	v := &containerView{self: self, store: st, records: rc, publish: publish}
	v.resetLocked()
	return v
}

func (v *containerView) resetLocked() {
	v.winners = make(map[string]viewEntry)
	v.others = make(map[string]bool)
	v.otherAddrs = make(map[string]map[netip.Addr]int)
	v.otherNums = make(map[string]map[int]int)
	v.names = &nameIndex{}
}

// sync brings the view up to date with the store.
func (v *containerView) sync() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.syncLocked()
}

func (v *containerView) syncLocked() {
	keys, next, ok := v.store.ChangedSince("", v.cursor)
	v.cursor = next
	if ok && len(keys) == 0 {
		return
	}
	ed := newNameEdit(v.names)
	if !ok {
		// The journal no longer reaches back to our cursor: start over.
		v.resetLocked()
		ed = newNameEdit(v.names)
		ed.changed = true // publish even an empty index: the old one is stale
		keys = nil
		for _, prefix := range []string{"c/", "n/"} {
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
		v.names = ed.x
		v.publish(ed.x)
	}
}

// updateLocked re-reads key from the store.
func (v *containerView) updateLocked(key string, ed *nameEdit) {
	isAddr := strings.HasPrefix(key, "c/")
	if !isAddr && !strings.HasPrefix(key, "n/") {
		return
	}
	es := v.store.Entries(key) // Winner's order
	v.setOtherLocked(key, slices.ContainsFunc(es, func(e cluster.Entry) bool { return e.Owner != v.self }))
	if !isAddr {
		return
	}
	var now viewEntry
	has := false
	if len(es) > 0 {
		now, has = v.entryOf(es[0])
	}
	old, had := v.winners[key]
	if had == has && old == now {
		return
	}
	if had {
		ed.remove(old.pn, old.app, old.record())
		delete(v.winners, key)
	}
	if has {
		ed.add(now.pn, now.app, now.record())
		v.winners[key] = now
	}
}

// entryOf decodes a container record; false if its key or value is not
// one.
func (v *containerView) entryOf(e cluster.Entry) (viewEntry, bool) {
	pn, addr, ok := parseAddrKey(e.Key)
	if !ok {
		return viewEntry{}, false
	}
	rec, ok := v.records.decode(e)
	if !ok {
		return viewEntry{}, false
	}
	return viewEntry{owner: e.Owner, pn: pn, addr: addr, app: rec.App, typ: rec.Type, number: rec.Number}, true
}

func (e viewEntry) record() dns.Record {
	return dns.Record{Type: e.typ, Number: e.number, Addr: e.addr}
}

// setOtherLocked records whether another node claims key.
func (v *containerView) setOtherLocked(key string, other bool) {
	if v.others[key] == other {
		return
	}
	d := 1
	if !other {
		d = -1
	}
	if pn, addr, ok := parseAddrKey(key); ok {
		v.otherAddrs[pn] = count(v.otherAddrs[pn], addr, d)
		if len(v.otherAddrs[pn]) == 0 {
			delete(v.otherAddrs, pn)
		}
	} else if at, n, ok := parseNumberKey(key); ok {
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

// claimed returns the addresses of pn and the numbers of (app, typ) that
// other nodes claim (also losing claims not withdrawn yet), so that local
// allocation skips them. Its cost grows with those, not with the
// containers of this node.
func (v *containerView) claimed(pn, app, typ string) (map[netip.Addr]bool, map[int]bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.syncLocked()
	addrs := make(map[netip.Addr]bool, len(v.otherAddrs[pn]))
	for a := range v.otherAddrs[pn] {
		addrs[a] = true
	}
	nums := make(map[int]bool, len(v.otherNums[appTypeKey(app, typ)]))
	for n := range v.otherNums[appTypeKey(app, typ)] {
		nums[n] = true
	}
	return addrs, nums
}

// changes returns the c/ keys that changed since *cursor and advances it.
// all is true when the journal no longer reaches back to *cursor: the
// caller must then look at every key (keys lists every key with a
// winner). The view is synced after the journal is read, so lookup
// reflects at least these changes.
func (v *containerView) changes(cursor *uint64) (keys []string, all bool) {
	keys, next, ok := v.store.ChangedSince("c/", *cursor)
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
func (v *containerView) keys() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.keysLocked()
}

func (v *containerView) keysLocked() []string {
	keys := make([]string, 0, len(v.winners))
	for k := range v.winners {
		keys = append(keys, k)
	}
	return keys
}

// lookup returns the winning claims of keys as the view holds them now.
func (v *containerView) lookup(keys []string) []keyWinner {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]keyWinner, len(keys))
	for i, k := range keys {
		e, ok := v.winners[k]
		out[i] = keyWinner{key: k, e: e, ok: ok}
	}
	return out
}

// parseAddrKey splits an address key c/<pn>/<ip>. Only the canonical
// spelling of an address counts (addrKey writes no other), so that a key
// and its (network, address) are one to one: two spellings of one IPv6
// address from a confused peer cannot stand for one container.
func parseAddrKey(key string) (pn string, addr netip.Addr, ok bool) {
	rest, ok := strings.CutPrefix(key, "c/")
	if !ok {
		return "", netip.Addr{}, false
	}
	pn, ip, ok := strings.Cut(rest, "/")
	if !ok {
		return "", netip.Addr{}, false
	}
	addr, err := netip.ParseAddr(ip)
	if err != nil || addr.String() != ip {
		return "", netip.Addr{}, false
	}
	return pn, addr, true
}

// parseNumberKey splits a number key n/<app>/<type>/<number> into
// appTypeKey(app, type) and the number.
func parseNumberKey(key string) (appType string, n int, ok bool) {
	rest, ok := strings.CutPrefix(key, "n/")
	if !ok {
		return "", 0, false
	}
	i := strings.LastIndexByte(rest, '/')
	if i < 0 {
		return "", 0, false
	}
	n, err := strconv.Atoi(rest[i+1:])
	if err != nil {
		return "", 0, false
	}
	return rest[:i], n, true
}
