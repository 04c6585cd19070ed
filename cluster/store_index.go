package cluster

import (
	"cmp"
	"slices"
	"sort"
	"strings"
)

// keyDir is the set of keys that share a directory, the part of the key up
// to and including its last '/' ("c/<pn>/", "n/<app>/<type>/", "eip/"):
// List reads only the directories its prefix reaches, and sorts a
// directory's keys once after it changed, not the whole store on every
// call. With a full network that was most of the cost of an attach.
type keyDir struct {
	keys   map[string]struct{}
	sorted []string // nil when keys changed since the last sort
}

func dirOf(key string) string { return key[:strings.LastIndexByte(key, '/')+1] }

func (d *keyDir) sortedKeys() []string {
	if d.sorted == nil {
		d.sorted = make([]string, 0, len(d.keys))
		for k := range d.keys {
			d.sorted = append(d.sorted, k)
		}
		slices.Sort(d.sorted)
	}
	return d.sorted
}

// indexLocked records that key now has a slot.
func (s *Store) indexLocked(key string) {
	dir := dirOf(key)
	d := s.dirs[dir]
	if d == nil {
		d = &keyDir{keys: make(map[string]struct{})}
		s.dirs[dir] = d
	}
	d.keys[key] = struct{}{}
	d.sorted = nil
}

// unindexLocked records that key has no slot left.
func (s *Store) unindexLocked(key string) {
	dir := dirOf(key)
	d := s.dirs[dir]
	if d == nil {
		return
	}
	delete(d.keys, key)
	d.sorted = nil
	if len(d.keys) == 0 {
		delete(s.dirs, dir)
	}
}

// List returns all visible live entries whose key has prefix, from every
// owner, sorted by (Key, Owner). Its cost grows with the entries it
// returns and the number of directories, not with the size of the store.
func (s *Store) List(prefix string) []Entry {
	s.mu.Lock()
	var out []Entry
	dirs := 0
	for dir, d := range s.dirs {
		var keys []string
		switch {
		case strings.HasPrefix(dir, prefix):
			keys = d.sortedKeys()
		case strings.HasPrefix(prefix, dir):
			// The prefix ends inside this directory's names.
			all := d.sortedKeys()
			i := sort.SearchStrings(all, prefix)
			j := i
			for j < len(all) && strings.HasPrefix(all[j], prefix) {
				j++
			}
			keys = all[i:j]
		default:
			continue
		}
		n := len(out)
		for _, key := range keys {
			out = s.appendVisibleLocked(out, key)
		}
		if len(out) > n {
			dirs++
		}
	}
	s.mu.Unlock()
	if dirs > 1 {
		slices.SortFunc(out, func(a, b Entry) int {
			return cmp.Or(strings.Compare(a.Key, b.Key), strings.Compare(a.Owner, b.Owner))
		})
	}
	return out
}

// appendVisibleLocked appends key's visible live entries, by owner.
func (s *Store) appendVisibleLocked(out []Entry, key string) []Entry {
	n := len(out)
	for _, r := range s.recs[key] {
		if s.visibleLocked(r) {
			out = append(out, r.entry())
		}
	}
	if len(out)-n > 1 {
		slices.SortFunc(out[n:], func(a, b Entry) int { return strings.Compare(a.Owner, b.Owner) })
	}
	return out
}

// Entries returns the visible live entries with this key (from any owner),
// in the order Winner ranks them: first claim first, ties by owner name.
func (s *Store) Entries(key string) []Entry {
	s.mu.Lock()
	out := s.appendVisibleLocked(nil, key)
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b Entry) int {
		return cmp.Or(cmp.Compare(a.Claimed, b.Claimed), strings.Compare(a.Owner, b.Owner))
	})
	return out
}
