package records

import (
	"errors"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"testing"

	"github.com/vrouter/vrouter/internal/leaktest"
)

// target is a stand-in for the router: what a follower applied to it.
type target struct {
	held  map[string]string // key → entry
	calls []string          // keys apply was called for, in order
	fail  map[string]bool   // keys whose apply fails
}

func (tg *target) apply(key string, cur, next *string) (*string, error) {
	tg.calls = append(tg.calls, key)
	if tg.fail[key] {
		return cur, errors.New("refused")
	}
	if next == nil {
		delete(tg.held, key)
		return nil, nil
	}
	tg.held[key] = *next
	return next, nil
}

func (tg *target) sync(f *Follower[string], full bool, suffix string) []string {
	tg.calls = nil
	f.Sync(full, func(c Claim) (string, bool) {
		return c.App + "/" + c.Type + suffix, c.Type != "skip"
	}, tg.apply)
	slices.Sort(tg.calls)
	return tg.calls
}

// TestFollower checks that a follower applies exactly the differences
// between the winning claims and what it applied, retries what failed,
// and converges after its journal cursor is lost.
func TestFollower(t *testing.T) {
	leaktest.Check(t)
	c := startNode(t, "node-a")
	st := c.Store()
	v := NewContainerView("node-a", st)
	f := NewFollower[string](v)
	tg := &target{held: make(map[string]string), fail: make(map[string]bool)}
	key := func(i int) string { return ContainerKey(testPN, netip.MustParseAddr("10.240.0."+strconv.Itoa(i))) }
	put := func(i int, typ string) {
		b, _ := Container{ID: "c-" + strconv.Itoa(i), App: testApp, Type: typ, Number: i}.Encode()
		st.Put(key(i), b)
	}
	for i := 1; i <= 3; i++ {
		put(i, "web")
	}
	st.Put(ContainerPrefix+testPN+"/not-an-ip", []byte("{}"))
	if got := tg.sync(f, false, ""); !slices.Equal(got, []string{key(1), key(2), key(3)}) {
		t.Fatalf("first sync applied %v", got)
	}
	if got := tg.sync(f, false, ""); len(got) != 0 {
		t.Fatalf("a sync without changes applied %v", got)
	}

	// A changed record, a deleted one, one that now asks for nothing.
	put(1, "worker")
	st.Delete(key(2))
	put(3, "skip")
	put(4, "web")
	if got := tg.sync(f, false, ""); !slices.Equal(got, []string{key(1), key(2), key(3), key(4)}) {
		t.Fatalf("sync after changes applied %v", got)
	}
	want := map[string]string{key(1): testApp + "/worker", key(4): testApp + "/web"}
	if !maps.Equal(tg.held, want) || f.Len() != 2 {
		t.Fatalf("target holds %v (follower %d), want %v", tg.held, f.Len(), want)
	}
	if e, ok := f.Applied(key(1)); !ok || e != testApp+"/worker" {
		t.Fatalf("Applied(%s) = %q, %v", key(1), e, ok)
	}

	// A failed apply is tried again, without any change, until it works.
	tg.fail[key(5)] = true
	put(5, "web")
	if got := tg.sync(f, false, ""); !slices.Equal(got, []string{key(5)}) {
		t.Fatalf("sync applied %v", got)
	}
	if got := tg.sync(f, false, ""); !slices.Equal(got, []string{key(5)}) {
		t.Fatalf("failed key not retried: %v", got)
	}
	delete(tg.fail, key(5))
	tg.sync(f, false, "")
	if got := tg.sync(f, false, ""); len(got) != 0 || tg.held[key(5)] != testApp+"/web" {
		t.Fatalf("after the retry worked: applied %v, holds %v", got, tg.held)
	}

	// What want returns changed for reasons outside the records: full
	// (or Invalidate) re-reads every key, and applies what differs.
	if got := tg.sync(f, false, "+v2"); len(got) != 0 {
		t.Fatalf("without full, an unchanged record was applied: %v", got)
	}
	if got := tg.sync(f, true, "+v2"); !slices.Equal(got, []string{key(1), key(4), key(5)}) {
		t.Fatalf("full sync applied %v", got)
	}
	f.Invalidate()
	if got := tg.sync(f, false, "+v3"); len(got) != 3 {
		t.Fatalf("sync after Invalidate applied %v", got)
	}

	// The journal no longer reaches back to the cursor: the follower
	// still sees the deletion, through what it applied.
	st.Delete(key(4))
	f.cursor = 1 << 62
	if got := tg.sync(f, false, "+v3"); !slices.Equal(got, []string{key(4)}) {
		t.Fatalf("sync after losing the journal applied %v", got)
	}
	if _, ok := tg.held[key(4)]; ok || f.Len() != 2 {
		t.Fatalf("deleted record still applied: %v", tg.held)
	}
}
