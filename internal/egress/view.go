package egress

import (
	"maps"
	"net/netip"
	"slices"
	"sort"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/records"
)

// Target is one of an app's dedicated IPs as the data path sees it.
type Target struct {
	IP      netip.Addr
	Gateway string     // node name
	Overlay netip.Addr // the gateway's overlay address (from its NodeMeta)
	Healthy bool       // alive and not draining
	Primary bool
}

// view is an immutable snapshot of every app's dedicated egress,
// rebuilt by refreshView (on every reconcile and before answering
// show) and read without locks by the data path.
type view struct {
	apps  map[string][]Target   // primary first
	rows  []control.EgressApp   // sorted by app; IPs primary first
	local map[string]netip.Addr // this gateway's assignments: app → IP
}

var emptyView = &view{}

// Targets returns app's dedicated IPs, primary first; nil if the app has
// no dedicated egress. Cheap (called on every reconcile and attach): it is
// served from the snapshot that Reconcile rebuilds.
func (a *Assigner) Targets(app string) []Target {
	return slices.Clone(a.loadView().apps[app])
}

// Local returns the app → IP map of the assignments this gateway holds.
func (a *Assigner) Local() map[string]netip.Addr {
	return maps.Clone(a.loadView().local)
}

// refreshView rebuilds and publishes the snapshot from the cluster's
// current state.
func (a *Assigner) refreshView() *view {
	// Read under a.mu, so that a snapshot never replaces a newer one.
	a.mu.Lock()
	defer a.mu.Unlock()
	nodes := a.members.Nodes()
	entries := a.store.List(records.EIPPrefix)
	v := buildView(a.self, nodes, entries, a.lastKnown)
	a.view.Store(v)
	return v
}

// liveAssignments decodes the eip records of live gateways (the store
// hides those of dead ones). A record is believed only if its owner is a
// node whose identity checked out and whose signed metadata advertises the
// IP, and no other such node advertises it too: a member cannot hand out
// another gateway's address, and one that advertises it as its own only
// makes the IP contested (unused), never its own.
func liveAssignments(nodes []cluster.Node, entries []cluster.Entry) []assignment {
	byName := make(map[string]cluster.Node, len(nodes))
	for _, n := range nodes {
		if n.Identity == cluster.IdentityOK {
			byName[n.Name] = n
		}
	}
	contested := contestedEgressIPs(nodes)
	seen := make(map[netip.Addr]bool)
	var out []assignment
	for _, e := range entries {
		ip, rec, err := records.ParseEIP(e.Key, e.Value)
		if err != nil || seen[ip] || contested[ip] {
			continue
		}
		n, ok := byName[e.Owner]
		if !ok || !slices.Contains(n.Meta.EgressIPs, ip) {
			continue
		}
		seen[ip] = true
		out = append(out, assignment{IP: ip, App: rec.App, Gateway: e.Owner, AssignedAt: rec.AssignedAt})
	}
	return out
}

// contestedEgressIPs are the egress IPs that more than one node's trusted
// metadata lists (dead nodes included until they are reaped).
func contestedEgressIPs(nodes []cluster.Node) map[netip.Addr]bool {
	owner := make(map[netip.Addr]string)
	var contested map[netip.Addr]bool
	for _, n := range nodes {
		if n.Identity != cluster.IdentityOK {
			continue
		}
		for _, ip := range n.Meta.EgressIPs {
			if o, ok := owner[ip]; ok && o != n.Name {
				if contested == nil {
					contested = make(map[netip.Addr]bool)
				}
				contested[ip] = true
			}
			owner[ip] = n.Name
		}
	}
	return contested
}

// buildView turns the live assignments into the snapshot. lastKnown
// (updated in place) remembers assignments of gateways that died: the
// store hides their records, but the apps still own those IPs and show
// must say "dead" rather than drop the row. An assignment is forgotten
// when its gateway is up again without it (released, or the gateway came
// back without that IP) or is no longer known at all (reaped).
func buildView(self string, nodes []cluster.Node, entries []cluster.Entry, lastKnown map[netip.Addr]assignment) *view {
	byName := make(map[string]cluster.Node, len(nodes))
	for _, n := range nodes {
		byName[n.Name] = n
	}
	all := liveAssignments(nodes, entries)
	live := make(map[netip.Addr]bool, len(all))
	for _, a := range all {
		live[a.IP] = true
		lastKnown[a.IP] = a
	}
	for ip, a := range lastKnown {
		if live[ip] {
			continue
		}
		if n, ok := byName[a.Gateway]; ok && (n.State == cluster.StateDead || n.State == cluster.StateLeft) {
			all = append(all, a)
			continue
		}
		delete(lastKnown, ip)
	}

	byApp := make(map[string][]assignment)
	for _, a := range all {
		byApp[a.App] = append(byApp[a.App], a)
	}
	v := &view{
		apps:  make(map[string][]Target, len(byApp)),
		local: make(map[string]netip.Addr),
	}
	for app, as := range byApp {
		sortAssignments(as)
		row := control.EgressApp{App: app}
		targets := make([]Target, 0, len(as))
		active := false
		for i, a := range as {
			n, known := byName[a.Gateway]
			health := gatewayHealth(n, known)
			ip := control.EgressIP{IP: a.IP.String(), Gateway: a.Gateway, Health: health, Primary: i == 0}
			if health == control.HealthHealthy && !active {
				ip.Active, active = true, true
			}
			row.IPs = append(row.IPs, ip)
			targets = append(targets, Target{
				IP:      a.IP,
				Gateway: a.Gateway,
				Overlay: n.Meta.Overlay,
				Healthy: health == control.HealthHealthy,
				Primary: i == 0,
			})
			if a.Gateway == self && !v.local[app].IsValid() {
				v.local[app] = a.IP
			}
		}
		v.apps[app] = targets
		v.rows = append(v.rows, row)
	}
	sort.Slice(v.rows, func(i, j int) bool { return v.rows[i].App < v.rows[j].App })
	return v
}

// gatewayHealth: healthy means alive, not draining and able to reach the
// outside (its own probe, --egress-probe); a suspect gateway
// is not healthy (it may be dead), a dead or unknown one is dead.
func gatewayHealth(n cluster.Node, known bool) string {
	if !known {
		return control.HealthDead
	}
	switch n.State {
	case cluster.StateAlive:
		if n.Meta.Draining {
			return control.HealthDraining
		}
		if n.Meta.Unhealthy {
			return control.HealthUnhealthy
		}
		return control.HealthHealthy
	case cluster.StateSuspect:
		return control.HealthSuspect
	}
	return control.HealthDead
}
