package daemon

import (
	"cmp"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/vrouter/vrouter/dns"
	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/ids"
)

// nameIndex is an immutable snapshot of every live container of the
// cluster, shaped for DNS: network → app → records sorted by (type,
// number, address). The container view (containers_view.go) edits a copy
// of it whenever container records change (a container attached or
// detached anywhere, a node died) and publishes it atomically, so a query
// costs two map lookups and no lock.
type nameIndex struct {
	byNet map[string]map[string][]dns.Record
}

// Containers implements dns.View.
func (x *nameIndex) Containers(pn, app string) []dns.Record {
	return x.byNet[pn][app]
}

// nameView is the dns.View the resolver holds: it reads the latest index.
type nameView struct{ d *Daemon }

func (v nameView) Containers(pn, app string) []dns.Record {
	return v.d.names.Load().Containers(pn, app)
}

// nameEdit builds the next nameIndex from the current one, copying only
// the networks and apps it touches: readers of the current index never
// see a change, and an edit costs what it touches rather than the whole
// cluster.
type nameEdit struct {
	x       *nameIndex
	nets    map[string]bool    // networks whose app map x owns
	apps    map[[2]string]bool // (network, app) whose records x owns
	changed bool
}

func newNameEdit(cur *nameIndex) *nameEdit {
	byNet := make(map[string]map[string][]dns.Record, len(cur.byNet))
	maps.Copy(byNet, cur.byNet)
	return &nameEdit{x: &nameIndex{byNet: byNet}, nets: make(map[string]bool), apps: make(map[[2]string]bool)}
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

// listNames answers the names op: every DNS name of an app, with the
// addresses each resolves to, in one network or in all of them.
func (d *Daemon) listNames(req *control.NamesRequest) (any, error) {
	if req == nil {
		return nil, invalid("names needs an app")
	}
	if err := ids.App(req.App); err != nil {
		return nil, invalid("%v", err)
	}
	if req.Network != "" {
		if err := ids.Network(req.Network); err != nil {
			return nil, invalid("%v", err)
		}
	}
	x := d.names.Load()
	nets := make([]string, 0, len(x.byNet))
	for pn := range x.byNet {
		if req.Network == "" || req.Network == pn {
			nets = append(nets, pn)
		}
	}
	slices.Sort(nets)
	out := []control.Name{}
	for _, pn := range nets {
		rs := x.byNet[pn][req.App]
		if len(rs) == 0 {
			continue
		}
		appName := req.App + "." + pn + "." + ids.Zone
		web := control.Name{Name: appName, Network: pn, Addresses: []string{}}
		var byType []control.Name
		var each []control.Name
		for i, r := range rs {
			if r.Type == "web" {
				web.Addresses = append(web.Addresses, r.Addr.String())
			}
			if i == 0 || rs[i-1].Type != r.Type {
				byType = append(byType, control.Name{Name: r.Type + "." + appName, Network: pn, Type: r.Type})
			}
			t := &byType[len(byType)-1]
			t.Addresses = append(t.Addresses, r.Addr.String())
			each = append(each, control.Name{
				Name: strconv.Itoa(r.Number) + "." + r.Type + "." + appName, Network: pn,
				Type: r.Type, Number: r.Number, Addresses: []string{r.Addr.String()},
			})
		}
		out = append(out, web)
		out = append(out, byType...)
		out = append(out, each...)
	}
	return out, nil
}
