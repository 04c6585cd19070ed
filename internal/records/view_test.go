package records

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
func referenceNames(st *cluster.Store) map[string]map[string][]dns.Record {
	out := make(map[string]map[string][]dns.Record)
	for _, e := range st.List("c/") {
		if w, ok := st.Winner(e.Key); !ok || w.Owner != e.Owner {
			continue
		}
		pn, ip, ok := strings.Cut(strings.TrimPrefix(e.Key, "c/"), "/")
		addr, err := netip.ParseAddr(ip)
		if !ok || err != nil {
			continue
		}
		var rec Container
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

// referenceClaimed is Claimed as it was before the view: a listing of the
// store.
func referenceClaimed(self string, st *cluster.Store, pn, app, typ string) (map[netip.Addr]bool, map[int]bool) {
	addrs := make(map[netip.Addr]bool)
	for _, e := range st.List("c/" + pn + "/") {
		if e.Owner == self {
			continue
		}
		if a, err := netip.ParseAddr(strings.TrimPrefix(e.Key, "c/"+pn+"/")); err == nil {
			addrs[a] = true
		}
	}
	nums := make(map[int]bool)
	prefix := "n/" + app + "/" + typ + "/"
	for _, e := range st.List(prefix) {
		if e.Owner == self {
			continue
		}
		if n, err := strconv.Atoi(strings.TrimPrefix(e.Key, prefix)); err == nil {
			nums[n] = true
		}
	}
	return addrs, nums
}

// checkView compares a node's view with a full re-read of its store.
func checkView(t *testing.T, self string, st *cluster.Store, v *ContainerView, round int) {
	t.Helper()
	v.Sync()
	got, want := v.Names().byNet, referenceNames(st)
	if !maps.EqualFunc(got, want, func(a, b map[string][]dns.Record) bool {
		return maps.EqualFunc(a, b, slices.Equal)
	}) {
		t.Fatalf("round %d, %s: names\n got %v\nwant %v", round, self, got, want)
	}
	for _, pn := range []string{testPN, testPN2} {
		for _, app := range []string{testApp, "ap-other"} {
			for _, typ := range []string{"web", "worker"} {
				ga, gn := v.Claimed(pn, app, typ)
				wa, wn := referenceClaimed(self, st, pn, app, typ)
				if !maps.Equal(ga, wa) || !maps.Equal(gn, wn) {
					t.Fatalf("round %d, %s: Claimed(%s, %s, %s) = %v %v, want %v %v", round, self, pn, app, typ, ga, gn, wa, wn)
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
	nodes := []*cluster.Cluster{a, b}
	names := []string{"node-a", "node-b"}
	views := []*ContainerView{NewContainerView(names[0], a.Store()), NewContainerView(names[1], b.Store())}
	rng := rand.New(rand.NewPCG(3, 4))
	addrs := []string{"10.240.0.1", "10.240.0.2", "10.240.0.3", "10.240.1.9", "not-an-ip"}
	for round := range 4 {
		for range 40 {
			st := nodes[rng.IntN(2)].Store()
			pn := []string{testPN, testPN2}[rng.IntN(2)]
			app := []string{testApp, "ap-0b7e3c52-9a41-4d6e-8f10-2c3d4e5f6a7b"}[rng.IntN(2)]
			typ := []string{"web", "worker"}[rng.IntN(2)]
			n := 1 + rng.IntN(4)
			switch op := rng.IntN(10); {
			case op < 4:
				rec, _ := Container{ID: "c-" + strconv.Itoa(rng.IntN(1000)), App: app, Type: typ, Number: n}.Encode()
				if rng.IntN(8) == 0 {
					rec = []byte("not json")
				}
				st.Put("c/"+pn+"/"+addrs[rng.IntN(len(addrs))], rec)
			case op < 6:
				st.Delete("c/" + pn + "/" + addrs[rng.IntN(len(addrs))])
			case op < 8:
				st.Put(NumberKey(app, typ, n), []byte("c-0123456789ab"))
			default:
				st.Delete(NumberKey(app, typ, n))
			}
		}
		waitFor(t, "the stores to agree", func() bool {
			return renderStore(a.Store()) == renderStore(b.Store())
		})
		for i := range nodes {
			checkView(t, names[i], nodes[i].Store(), views[i], round)
		}
	}
	if len(views[0].Names().byNet) == 0 {
		t.Fatal("the random records left no container to check")
	}

	// A view whose cursor the journal no longer knows starts over, and
	// forgets what was withdrawn meanwhile.
	st := a.Store()
	v := views[0]
	for _, e := range st.List("c/") {
		if e.Owner == names[0] {
			st.Delete(e.Key)
		}
	}
	v.cursor = 1 << 62
	v.Sync()
	if got, want := fmt.Sprint(v.Names().byNet), fmt.Sprint(referenceNames(st)); got != want {
		t.Fatalf("after starting over: names\n got %s\nwant %s", got, want)
	}
	checkView(t, names[0], st, v, 4)
}

// TestContainerViewOthers checks the listing of other nodes' containers:
// winning claims only, whole records, never this node's.
func TestContainerViewOthers(t *testing.T) {
	a, b := startPair(t)
	va := NewContainerView("node-a", a.Store())
	mine, _ := Container{ID: "c-00000000000a", App: testApp, Type: "web", Number: 1}.Encode()
	theirs, _ := Container{ID: "c-00000000000b", App: testApp, Type: "web", Number: 2, MTU: 1390, Interface: "eth0"}.Encode()
	a.Store().Put(ContainerKey(testPN, netip.MustParseAddr("10.240.0.1")), mine)
	b.Store().Put(ContainerKey(testPN, netip.MustParseAddr("10.240.0.2")), theirs)
	b.Store().Put(ContainerKey(testPN, netip.MustParseAddr("10.240.0.3")), []byte("not json"))
	waitFor(t, "b's records to reach a", func() bool { return len(a.Store().List("c/")) == 3 })
	got := va.Others()
	if len(got) != 1 || got[0].Owner != "node-b" || got[0].PN != testPN || got[0].Addr != netip.MustParseAddr("10.240.0.2") ||
		got[0].ID != "c-00000000000b" || got[0].MTU != 1390 || got[0].Interface != "eth0" {
		t.Fatalf("Others() = %+v", got)
	}
}
