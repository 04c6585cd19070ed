package records

import (
	"cmp"
	"maps"
	"slices"
	"strings"

	"github.com/vrouter/vrouter/dns"
)

// Names is an immutable snapshot of every live container of the cluster,
// shaped for DNS: network → app → records sorted by (type, number,
// address). The container view edits a copy of it whenever container
// records change (a container attached or detached anywhere, a node died)
// and publishes it atomically, so a query costs two map lookups and no
// lock.
type Names struct {
	byNet map[string]map[string][]dns.Record
}

// Containers returns the records of app in pn, sorted; callers must not
// change them.
func (x *Names) Containers(pn, app string) []dns.Record {
	return x.byNet[pn][app]
}

// Networks returns the networks with at least one container, sorted.
func (x *Names) Networks() []string {
	return slices.Sorted(maps.Keys(x.byNet))
}

// nameEdit builds the next Names from the current one, copying only the
// networks and apps it touches: readers of the current index never see a
// change, and an edit costs what it touches rather than the whole cluster.
type nameEdit struct {
	x       *Names
	nets    map[string]bool    // networks whose app map x owns
	apps    map[[2]string]bool // (network, app) whose records x owns
	changed bool
}

func newNameEdit(cur *Names) *nameEdit {
	byNet := make(map[string]map[string][]dns.Record, len(cur.byNet))
	maps.Copy(byNet, cur.byNet)
	return &nameEdit{x: &Names{byNet: byNet}, nets: make(map[string]bool), apps: make(map[[2]string]bool)}
}

// bucket returns the records of (pn, app) for editing.
func (e *nameEdit) bucket(pn, app string) map[string][]dns.Record {
	e.changed = true
	apps := e.x.byNet[pn]
	if !e.nets[pn] {
		apps = maps.Clone(apps)
		if apps == nil {
			apps = make(map[string][]dns.Record)
		}
		e.x.byNet[pn] = apps
		e.nets[pn] = true
	}
	if k := [2]string{pn, app}; !e.apps[k] {
		apps[app] = slices.Clone(apps[app])
		e.apps[k] = true
	}
	return apps
}

func (e *nameEdit) add(pn, app string, r dns.Record) {
	apps := e.bucket(pn, app)
	rs := apps[app]
	i, found := slices.BinarySearchFunc(rs, r, compareRecords)
	if !found {
		apps[app] = slices.Insert(rs, i, r)
	}
}

func (e *nameEdit) remove(pn, app string, r dns.Record) {
	apps := e.bucket(pn, app)
	rs := apps[app]
	if i, found := slices.BinarySearchFunc(rs, r, compareRecords); found {
		rs = slices.Delete(rs, i, i+1)
		apps[app] = rs
	}
	if len(rs) == 0 {
		delete(apps, app)
		if len(apps) == 0 {
			delete(e.x.byNet, pn)
			delete(e.nets, pn)
		}
		delete(e.apps, [2]string{pn, app})
	}
}

// compareRecords orders an app's records by type, then number; the address
// only breaks ties between claims that collide for a moment.
func compareRecords(a, b dns.Record) int {
	return cmp.Or(strings.Compare(a.Type, b.Type), cmp.Compare(a.Number, b.Number), a.Addr.Compare(b.Addr))
}
