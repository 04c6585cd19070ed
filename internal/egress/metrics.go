package egress

import (
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/stack"
)

// What the path knows of each app's dedicated egress, for metrics: the
// active gateway (the first that takes the app's new flows from this
// node) and how often it changed from one gateway to another.

// failover follows one app's active gateway; guarded by Path.mu.
// A failover is counted when the active gateway stops taking new flows
// (dead, unhealthy, drained, not answering probes, unassigned) and another
// takes over.
type failover struct {
	active string // gateway taking new flows now; "" while none does
	last   string // the last non-empty active gateway (while active is "")
	total  uint64
	at     time.Time
}

// AppMetrics is one app's dedicated egress as this node sees it.
type AppMetrics struct {
	App          string
	Targets      []TargetMetrics // primary first
	Failovers    uint64
	LastFailover time.Time // zero: none
}

// TargetMetrics is one of an app's egress IPs.
type TargetMetrics struct {
	IP       netip.Addr
	Gateway  string
	Active   bool // the app's new flows leave through this IP now (as this node routes them)
	Healthy  bool // the gateway takes new flows: alive, not draining or unhealthy, answering probes
	Draining bool
	Flows    uint64 // on this IP's gateway: flows its NATs opened (TCP, UDP, ping)
}

// takesNew reports whether gateway gw takes app's new flows from this
// node. Callers hold p.mu.
func (p *Path) takesNew(app, gw string, targets []Target, alive map[string]bool) bool {
	for _, tg := range targets {
		if tg.Gateway != gw {
			continue
		}
		if r, ok := p.routes[app]; ok && r.dedicated {
			for _, g := range r.gws {
				if g.Overlay == tg.Overlay {
					return g.New
				}
			}
			return false
		}
		return tg.Healthy && alive[gw]
	}
	return false
}

// activeOf names the gateway that takes app's new flows from this node: for
// an app with containers here, the first of its route that takes new
// flows; otherwise the first healthy target. Callers hold p.mu.
func (p *Path) activeOf(app string, targets []Target, alive map[string]bool) string {
	if r, ok := p.routes[app]; ok && r.dedicated {
		for _, g := range r.gws {
			if !g.New {
				continue
			}
			for _, tg := range targets {
				if tg.Overlay == g.Overlay {
					return tg.Gateway
				}
			}
		}
		return ""
	}
	for _, tg := range targets {
		if tg.Healthy && alive[tg.Gateway] {
			return tg.Gateway
		}
	}
	return ""
}

// observeFailovers updates every app's active gateway after a Reconcile.
// Callers hold p.mu.
func (p *Path) observeFailovers(alive map[string]bool, now time.Time) {
	v := p.assign.loadView()
	for app, targets := range v.apps {
		f := p.failovers[app]
		if f == nil {
			f = &failover{}
			p.failovers[app] = f
		}
		a := p.activeOf(app, targets, alive)
		// A failover is the active gateway ceasing to take new flows and
		// another taking over; a gateway preferred again while the other
		// still works (an undrain, the assignment settling) is none.
		prev := f.active // the gateway we move from: the active one, or the last before none was
		if prev == "" {
			prev = f.last
		}
		if a != "" && prev != "" && a != prev && !p.takesNew(app, prev, targets, alive) {
			f.total++
			f.at = now
			p.log.Info("egress failover", "app", app, "from", prev, "to", a)
		}
		f.active = a
		if a != "" {
			f.last = a
		}
	}
	for app := range p.failovers {
		if _, ok := v.apps[app]; !ok {
			delete(p.failovers, app) // egress disabled: its history goes with it
		}
	}
}

// natFlows is the part of a NAT that counts what it opened (the stack's
// NATs do).
type natFlows interface{ EgressStats() stack.EgressStats }

// Metrics returns every app's dedicated egress as this node sees it, by app.
func (p *Path) Metrics() []AppMetrics {
	v := p.assign.loadView()
	draining := map[string]bool{}
	for _, n := range p.members.Nodes() {
		draining[n.Name] = n.State == cluster.StateAlive && n.Meta.Draining
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	flows := map[netip.Addr]uint64{}
	for k, n := range p.gw.nats {
		if nf, ok := n.(natFlows); ok {
			e := nf.EgressStats()
			flows[k.ip] += e.TCPDials + e.UDPFlows + e.PingsSent
		}
	}
	out := make([]AppMetrics, 0, len(v.apps))
	for app, targets := range v.apps {
		m := AppMetrics{App: app}
		var active string
		if f := p.failovers[app]; f != nil {
			m.Failovers, m.LastFailover, active = f.total, f.at, f.active
		}
		r, local := p.routes[app]
		for _, tg := range targets {
			healthy := tg.Healthy
			if local {
				for _, g := range r.gws {
					if g.Overlay == tg.Overlay {
						healthy = g.New
					}
				}
			}
			m.Targets = append(m.Targets, TargetMetrics{
				IP: tg.IP, Gateway: tg.Gateway, Active: tg.Gateway == active, Healthy: healthy,
				Draining: draining[tg.Gateway], Flows: flows[tg.IP],
			})
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].App < out[j].App })
	return slices.Clip(out)
}
