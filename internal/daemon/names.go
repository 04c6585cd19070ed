package daemon

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/vrouter/vrouter/dns"
	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/ids"
)

// nameIndex is an immutable snapshot of every live container of the
// cluster, shaped for DNS: network → app → records. The daemon rebuilds it
// from the store whenever the cluster changes (a container attached or
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

// rebuildNames takes a new snapshot of the container records: this node's
// and those of live nodes that won their claims (records of dead nodes are
// hidden by the store, so they vanish from DNS at once).
func (d *Daemon) rebuildNames() {
	x := &nameIndex{byNet: make(map[string]map[string][]dns.Record)}
	st := d.cluster.Store()
	for _, e := range st.List("c/") {
		if w, ok := st.Winner(e.Key); !ok || w.Owner != e.Owner {
			continue
		}
		pn, ip, ok := strings.Cut(strings.TrimPrefix(e.Key, "c/"), "/")
		if !ok {
			continue
		}
		addr, err := netip.ParseAddr(ip)
		if err != nil {
			continue
		}
		rec, ok := d.records.decode(e)
		if !ok {
			continue
		}
		apps := x.byNet[pn]
		if apps == nil {
			apps = make(map[string][]dns.Record)
			x.byNet[pn] = apps
		}
		apps[rec.App] = append(apps[rec.App], dns.Record{Type: rec.Type, Number: rec.Number, Addr: addr})
	}
	for _, apps := range x.byNet {
		for _, rs := range apps {
			slices.SortFunc(rs, func(a, b dns.Record) int {
				if c := strings.Compare(a.Type, b.Type); c != 0 {
					return c
				}
				return a.Number - b.Number
			})
		}
	}
	d.names.Store(x)
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
