package cluster

import (
	"slices"
	"testing"
)

// FuzzStoreMerge: records come from any member. Whatever decodes, signed
// by its owner (so that the merge rules are reached, not only the
// signature check), must merge without a panic; delivering it again
// changes nothing; and two stores that get the records in opposite orders
// end with the same entries (the merge is a CRDT: order must not matter).
func FuzzStoreMerge(f *testing.F) {
	first := []*record{
		{Entry: Entry{Key: "c/a", Owner: "n1", Version: 2, Claimed: 5, Value: []byte("v1")}, boot: 3},
		{Entry: Entry{Key: "c/a", Owner: "n2", Version: 1, Claimed: 4, Value: []byte("v2")}, boot: 1},
		{Entry: Entry{Key: "c/a", Owner: "n1", Version: 3, Claimed: 5}, boot: 3, deleted: true},
	}
	f.Add(encodeRecords(first...))
	// The harness reaches the merge rules: signed seeds are applied.
	ts := newTestStore(f, "self-a", 1)
	for _, r := range first {
		ts.deliver(f, *r)
	}
	if st := ts.Stats(); st.RecordsApplied != 3 {
		f.Fatalf("seed records: %+v, want 3 applied", st)
	}
	f.Add(encodeRecords(
		&record{Entry: Entry{Key: "k", Owner: "n1", Version: 1, Claimed: 1, Value: []byte("old life")}, boot: 1},
		&record{Entry: Entry{Key: "k", Owner: "n1", Version: 1, Claimed: 1, Value: []byte("new life")}, boot: 2},
	))
	f.Add(encodeState([]*record{{Entry: Entry{Key: "b", Owner: "n2", Version: 2}, boot: 1, deleted: true}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil || m.typ == msgBye || len(m.records) > 64 {
			return
		}
		recs := make([]record, len(m.records))
		for i, r := range m.records {
			if r.Owner == "self-a" || r.Owner == "self-b" {
				return // a copy of the stores' own entries follows other rules
			}
			recs[i] = signed(r)
		}
		a := newTestStore(t, "self-a", 1)
		z := newTestStore(t, "self-b", 1)
		a.deliver(t, recs...)
		before := view(a.Store)
		applied := a.Stats().RecordsApplied
		a.deliver(t, recs...)
		if got := view(a.Store); got != before || a.Stats().RecordsApplied != applied {
			t.Fatalf("delivering the same records again changed the store:\n%s\n%s", before, got)
		}
		rev := slices.Clone(recs)
		slices.Reverse(rev)
		for _, r := range rev {
			z.deliver(t, r)
		}
		if va, vz := view(a.Store), view(z.Store); va != vz {
			t.Fatalf("order changed the outcome:\n in order: %s\n reversed: %s", va, vz)
		}
	})
}
