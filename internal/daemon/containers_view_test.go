package daemon

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/dns"
)

// referenceNames is the name index as it was built before the view: every
// container record of the store, winning claims only, sorted.
func referenceNames(d *Daemon) map[string]map[string][]dns.Record {
	out := make(map[string]map[string][]dns.Record)
	st := d.cluster.Store()
	for _, e := range st.List("c/") {
		if w, ok := st.Winner(e.Key); !ok || w.Owner != e.Owner {
			continue
		}
		pn, ip, ok := strings.Cut(strings.TrimPrefix(e.Key, "c/"), "/")
		addr, err := netip.ParseAddr(ip)
		if !ok || err != nil {
			continue
		}
		var rec containerRecord
		if json.Unmarshal(e.Value, &rec) != nil {
			continue
		}
		if out[pn] == nil {
			out[pn] = make(map[string][]dns.Record)
		}
		out[pn][rec.App] = append(out[pn][rec.App], dns.Record{Type: rec.Type, Number: rec.Number, Addr: addr})
	}
	for _, apps := range out {
		for _, rs := range apps {
			slices.SortFunc(rs, compareRecords)
		}
	}
	return out
}

// referenceClaimed is claimed as it was before the view: a listing of the
// store.
func referenceClaimed(d *Daemon, pn, app, typ string) (map[netip.Addr]bool, map[int]bool) {
	st := d.cluster.Store()
	addrs := make(map[netip.Addr]bool)
	for _, e := range st.List("c/" + pn + "/") {
		if e.Owner == d.cfg.Name {
			continue
		}
		if a, err := netip.ParseAddr(strings.TrimPrefix(e.Key, "c/"+pn+"/")); err == nil {
			addrs[a] = true
		}
	}
	nums := make(map[int]bool)
	prefix := "n/" + app + "/" + typ + "/"
	for _, e := range st.List(prefix) {
		if e.Owner == d.cfg.Name {
			continue
		}
		if n, err := strconv.Atoi(strings.TrimPrefix(e.Key, prefix)); err == nil {
			nums[n] = true
		}
	}
	return addrs, nums
}

func renderStore(st *cluster.Store) string {
	var b strings.Builder
	for _, e := range st.List("") {
		fmt.Fprintf(&b, "%s/%s@%d ", e.Owner, e.Key, e.Version)
	}
	return b.String()
}

// checkView compares the daemon's view with a full re-read of its store.
func checkView(t *testing.T, td *testDaemon, round int) {
	t.Helper()
	td.view.sync()
	got, want := td.names.Load().byNet, referenceNames(td.Daemon)
	if !maps.EqualFunc(got, want, func(a, b map[string][]dns.Record) bool {
		return maps.EqualFunc(a, b, slices.Equal)
	}) {
		t.Fatalf("round %d, %s: names\n got %v\nwant %v", round, td.cfg.Name, got, want)
	}
	for _, pn := range []string{testPN, testPN2} {
		for _, app := range []string{testApp, "ap-other"} {
			for _, typ := range []string{"web", "worker"} {
				ga, gn := td.view.claimed(pn, app, typ)
				wa, wn := referenceClaimed(td.Daemon, pn, app, typ)
				if !maps.Equal(ga, wa) || !maps.Equal(gn, wn) {
					t.Fatalf("round %d, %s: claimed(%s, %s, %s) = %v %v, want %v %v", round, td.cfg.Name, pn, app, typ, ga, gn, wa, wn)
				}
			}
		}
	}
}

// TestContainerViewFollowsStore writes random container records, address
// and number claims (competing, withdrawn, malformed) on two nodes, and
// checks that each node's view (DNS names and what allocation skips)
// equals a full re-read of its store once gossip has settled; also after
// the view had to start over.
func TestContainerViewFollowsStore(t *testing.T) {
	a, b := startPair(t)
	rng := rand.New(rand.NewPCG(3, 4))
	addrs := []string{"10.240.0.1", "10.240.0.2", "10.240.0.3", "10.240.1.9", "not-an-ip"}
	for round := range 4 {
		for range 40 {
			td := []*testDaemon{a, b}[rng.IntN(2)]
			st := td.cluster.Store()
			pn := []string{testPN, testPN2}[rng.IntN(2)]
			app := []string{testApp, "ap-other"}[rng.IntN(2)]
			typ := []string{"web", "worker"}[rng.IntN(2)]
			n := 1 + rng.IntN(4)
			switch op := rng.IntN(10); {
			case op < 4:
				rec, _ := json.Marshal(containerRecord{ID: newID(), App: app, Type: typ, Number: n})
				if rng.IntN(8) == 0 {
					rec = []byte("not json")
				}
				st.Put("c/"+pn+"/"+addrs[rng.IntN(len(addrs))], rec)
			case op < 6:
				st.Delete("c/" + pn + "/" + addrs[rng.IntN(len(addrs))])
			case op < 8:
				st.Put(numberKey(app, typ, n), []byte("c-0123456789ab"))
			default:
				st.Delete(numberKey(app, typ, n))
			}
		}
		waitFor(t, "the stores to agree", func() bool {
			return renderStore(a.cluster.Store()) == renderStore(b.cluster.Store())
		})
		checkView(t, a, round)
		checkView(t, b, round)
	}

	// A view whose cursor the journal no longer knows starts over, and
	// forgets what was withdrawn meanwhile. (A view of its own: the
	// daemon's is synced by its reconcile loop at any moment.)
	st := a.cluster.Store()
	var published *nameIndex
	v := newContainerView(a.cfg.Name, st, &recordCache{}, func(x *nameIndex) { published = x })
	v.sync()
	for _, e := range st.List("c/") {
		if e.Owner == a.cfg.Name {
			st.Delete(e.Key)
		}
	}
	v.cursor = 1 << 62
	v.sync()
	if got, want := fmt.Sprint(published.byNet), fmt.Sprint(referenceNames(a.Daemon)); got != want {
		t.Fatalf("after starting over: names\n got %s\nwant %s", got, want)
	}
}

// TestNameEditCopies checks that editing never changes an index that was
// published: DNS reads it without a lock.
func TestNameEditCopies(t *testing.T) {
	r := func(typ string, n int, ip string) dns.Record {
		return dns.Record{Type: typ, Number: n, Addr: netip.MustParseAddr(ip)}
	}
	ed := newNameEdit(&nameIndex{})
	ed.add("pn", "app", r("web", 2, "10.240.0.2"))
	ed.add("pn", "app", r("web", 1, "10.240.0.1"))
	ed.add("pn", "app", r("worker", 1, "10.240.0.3"))
	ed.add("pn", "other", r("web", 1, "10.240.0.4"))
	x0 := ed.x
	want0 := fmt.Sprint(x0.byNet)
	if got := fmt.Sprint(x0.Containers("pn", "app")); got != "[{web 1 10.240.0.1} {web 2 10.240.0.2} {worker 1 10.240.0.3}]" {
		t.Fatalf("records not sorted by type and number: %s", got)
	}
	ed = newNameEdit(x0)
	ed.remove("pn", "app", r("web", 1, "10.240.0.1"))
	ed.add("pn", "app", r("web", 3, "10.240.0.5"))
	ed.remove("pn", "other", r("web", 1, "10.240.0.4"))
	ed.add("pn2", "app", r("web", 1, "10.240.0.1"))
	if got := fmt.Sprint(x0.byNet); got != want0 {
		t.Fatalf("edit changed the published index:\n got %s\nwant %s", got, want0)
	}
	if got := fmt.Sprint(ed.x.byNet); got != "map[pn:map[app:[{web 2 10.240.0.2} {web 3 10.240.0.5} {worker 1 10.240.0.3}]] pn2:map[app:[{web 1 10.240.0.1}]]]" {
		t.Fatalf("edited index: %s", got)
	}
	// Removing the last record of a network drops the network.
	ed = newNameEdit(ed.x)
	ed.remove("pn2", "app", r("web", 1, "10.240.0.1"))
	if _, ok := ed.x.byNet["pn2"]; ok || !ed.changed {
		t.Fatalf("empty network kept: %v", ed.x.byNet)
	}
}

func TestParseKeys(t *testing.T) {
	for _, tt := range []struct {
		key  string
		pn   string
		addr string
	}{
		{"c/pn-1/10.240.0.1", "pn-1", "10.240.0.1"},
		{"c/pn-1/x", "", ""},
		{"c/pn-1/0::1", "", ""}, // not how addrKey spells ::1
		{"c/pn-1", "", ""},
		{"n/a/web/1", "", ""},
	} {
		pn, addr, ok := parseAddrKey(tt.key)
		if ok != (tt.pn != "") || pn != tt.pn || (ok && addr.String() != tt.addr) {
			t.Errorf("parseAddrKey(%q) = %q, %v, %v", tt.key, pn, addr, ok)
		}
	}
	for _, tt := range []struct {
		key string
		at  string
		n   int
	}{
		{"n/ap-1/web/12", "ap-1/web", 12},
		{"n/ap-1/web/x", "", 0},
		{"n/x", "", 0},
		{"c/pn/10.240.0.1", "", 0},
	} {
		at, n, ok := parseNumberKey(tt.key)
		if ok != (tt.at != "") || at != tt.at || n != tt.n {
			t.Errorf("parseNumberKey(%q) = %q, %d, %v", tt.key, at, n, ok)
		}
	}
}

// FuzzParseKeys feeds the key parsers what peers could put in the store.
func FuzzParseKeys(f *testing.F) {
	for _, k := range []string{"c/pn-1/10.240.0.1", "c/pn-1/", "c//1.2.3.4", "c/p/0::1", "c/p/::ffff:10.0.0.1", "n/ap-1/web/3", "n/a/b/c/-1", "n/x", "c/", ""} {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if pn, addr, ok := parseAddrKey(key); ok {
			if strings.Contains(pn, "/") || key != addrKey(pn, addr) {
				t.Fatalf("parseAddrKey(%q) = %q, %v", key, pn, addr)
			}
		}
		if at, n, ok := parseNumberKey(key); ok {
			num, found := strings.CutPrefix(key, "n/"+at+"/")
			if m, err := strconv.Atoi(num); !found || strings.Contains(num, "/") || err != nil || m != n {
				t.Fatalf("parseNumberKey(%q) = %q, %d", key, at, n)
			}
		}
	})
}
