package records

// Follower keeps a target (the router's entries for other nodes'
// containers, a gateway's NATs) equal to a function of the winning
// container claims. Each Sync reads the keys that changed in the store's
// journal since the last one, asks want what each key's claim calls for,
// diffs that against what it last applied, and hands only the
// differences to apply; keys whose apply failed are tried again on the
// next Sync. So a container attached anywhere costs each reconciler one
// entry, not a pass over the cluster.
//
// E is what one key asks of the target; it must be comparable, because
// equal entries are not applied again.
//
// A Follower is not safe for concurrent use: its owner serialises Syncs.
type Follower[E comparable] struct {
	view    *ContainerView
	cursor  uint64          // in the store's journal
	applied map[string]E    // c/ key → the entry the target holds for it
	retry   map[string]bool // keys whose apply failed: tried again next time
	stale   bool            // the next Sync looks at every key
}

// NewFollower returns a follower of v that has applied nothing.
func NewFollower[E comparable](v *ContainerView) *Follower[E] {
	return &Follower[E]{view: v, applied: make(map[string]E), retry: make(map[string]bool)}
}

// Invalidate makes the next Sync look at every key: for an owner that
// skipped Syncs, or whose want changed for reasons outside the records.
func (f *Follower[E]) Invalidate() { f.stale = true }

// Len returns the number of keys with an applied entry.
func (f *Follower[E]) Len() int { return len(f.applied) }

// Applied returns the entry applied for key.
func (f *Follower[E]) Applied(key string) (E, bool) {
	e, ok := f.applied[key]
	return e, ok
}

// Sync brings the target up to date. full makes it look at every key (the
// caller's inputs to want changed), not only at those that changed.
//
// want returns the entry a winning claim asks for (false: none). apply
// changes the target for key from cur to next (nil: no entry) and returns
// what the target holds for key afterwards (nil: nothing) and whether it
// failed; a failed key is tried again on the next Sync even if nothing
// changed. apply is not called for a key whose entry is unchanged.
func (f *Follower[E]) Sync(full bool, want func(Claim) (E, bool), apply func(key string, cur, next *E) (*E, error)) {
	keys, all := f.view.changes(&f.cursor)
	if all || full || f.stale {
		keys = f.view.keys()
		for k := range f.applied {
			keys = append(keys, k)
		}
	}
	f.stale = false
	for k := range f.retry {
		keys = append(keys, k)
	}
	seen := make(map[string]bool, len(keys))
	for _, kc := range f.view.lookup(keys) {
		if seen[kc.key] {
			continue
		}
		seen[kc.key] = true
		var next *E
		if kc.ok {
			if e, ok := want(kc.c); ok {
				next = &e
			}
		}
		cur, had := f.applied[kc.key]
		switch {
		case !had && next == nil:
			delete(f.retry, kc.key)
			continue
		case had && next != nil && cur == *next && !f.retry[kc.key]:
			continue
		}
		var curp *E
		if had {
			curp = &cur
		}
		now, err := apply(kc.key, curp, next)
		if now != nil {
			f.applied[kc.key] = *now
		} else {
			delete(f.applied, kc.key)
		}
		if err != nil {
			f.retry[kc.key] = true
		} else {
			delete(f.retry, kc.key)
		}
	}
}
