package cluster

// journal numbers the changes of the store's keys, so that readers follow
// the store by what changed (ChangedSince) instead of re-reading all of it
// after every change. It logs a key whenever one of its slots is written
// (put, delete, merge) and whenever one of its entries becomes visible or
// hidden because memberlist's view of the owner changed. Keys repeat; a
// logged key may turn out unchanged.
type journal struct {
	base uint64   // sequence number of the change before keys[0]
	keys []string // oldest first: keys[i] has sequence base+i+1
}

// journalMin is the journal length below which it is never trimmed.
const journalMin = 4096

func (j *journal) seq() uint64 { return j.base + uint64(len(j.keys)) }

// add logs key. Past max(journalMin, 2×slots) changes it forgets the
// oldest half: a reader that far behind re-reads everything, which costs
// about what those changes would have.
func (j *journal) add(key string, slots int) {
	j.keys = append(j.keys, key)
	if n := len(j.keys); n > max(journalMin, 2*slots) {
		half := n / 2
		j.base += uint64(half)
		j.keys = append([]string(nil), j.keys[half:]...)
	}
}

func (s *Store) logLocked(key string) { s.journal.add(key, s.nrecs) }

// ChangedSince returns, once each, the keys with prefix whose visible
// entries may have changed after sequence number since, and the sequence
// number to pass next time. A reader starts at 0 and re-reads with List
// whatever it cares about when ok is false: the journal no longer reaches
// back to since. Keys changed after the call are reported by the next one.
func (s *Store) ChangedSince(prefix string, since uint64) (keys []string, next uint64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := &s.journal
	next = j.seq()
	if since < j.base || since > next {
		return nil, next, false
	}
	seen := make(map[string]struct{})
	for _, k := range j.keys[since-j.base:] {
		if _, dup := seen[k]; dup || len(k) < len(prefix) || k[:len(prefix)] != prefix {
			continue
		}
		seen[k] = struct{}{}
		keys = append(keys, k)
	}
	return keys, next, true
}
