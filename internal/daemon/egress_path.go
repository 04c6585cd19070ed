package daemon

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/internal/records"
	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/stack"
)

// Dedicated egress data path (packet path 5), configured from the
// assignments (egress_assign.go) on every reconcile:
//
//   - worker: each local container of an app with dedicated egress gets an
//     EgressRoute (its gateways in primary/standby order, which take new
//     flows and which keep theirs) and the router accepts the gateways'
//     answers for that app's egress VNI;
//   - gateway: for each app it holds an IP for and each network the app
//     has containers in (on other nodes), a netstack that NATs to that IP,
//     and remote entries for those containers in the egress VNI's table.
//
// A container on the gateway node itself does not use that gateway (the
// overlay cannot carry a frame to its own node): it uses the app's other
// gateway.

// egressPath is the state of path 5 on this node, owned by
// reconcileEgressPath (serialised by mu).
type egressPath struct {
	mu      sync.Mutex
	probes  map[netip.Addr]*gwProbe // worker: overlay probes of gateways
	routes  map[string]appRoute     // worker: the route last given to every local container of each app
	returns map[uint32]bool         // egress VNIs with a return entry (worker)
	gw      gatewayPath             // egress_path_gateway.go
}

func newEgressPath(v *records.ContainerView) *egressPath {
	return &egressPath{
		probes:  make(map[netip.Addr]*gwProbe),
		routes:  make(map[string]appRoute),
		returns: make(map[uint32]bool),
		gw:      newGatewayPath(v),
	}
}

// appRoute is what the egress route of each container of one app is made
// of; only the VNI differs between the app's networks.
type appRoute struct {
	dedicated bool // the app has dedicated egress: no node egress, even without a usable gateway
	gws       []router.EgressGateway
}

func (r appRoute) equal(o appRoute) bool {
	return r.dedicated == o.dedicated && slices.Equal(r.gws, o.gws)
}

// route is the egress route of the app's containers in network pn; nil:
// node egress.
func (r appRoute) route(app, pn string) *router.EgressRoute {
	if !r.dedicated {
		return nil
	}
	return &router.EgressRoute{VNI: records.EgressVNI(app, pn), Gateways: r.gws}
}

// reconcileEgressPath brings routes, returns and gateway NATs in line with
// the assignments and the containers of the cluster. fresh are containers
// just attached, which get their route even if their app's did not change.
// Its cost grows with the apps of this node, the containers whose route
// changes and the container records that changed, not with all of them.
func (d *Daemon) reconcileEgressPath(fresh ...*container) {
	p := d.egress
	p.mu.Lock()
	defer p.mu.Unlock()

	alive := make(map[string]bool)
	overlays := make(map[string][4]byte) // of live nodes
	for _, n := range d.cluster.Nodes() {
		alive[n.Name] = n.State == cluster.StateAlive || n.State == cluster.StateSuspect
		if alive[n.Name] && n.Meta.Overlay.IsValid() {
			overlays[n.Name] = n.Meta.Overlay.As4()
		}
	}
	d.reconcileEgressRoutes(p, alive, fresh)
	d.reconcileGatewayPath(p, overlays)
}

// reconcileEgressRoutes is the worker side: each local container's route
// and the router's returns for the apps' egress VNIs. Callers hold p.mu.
func (d *Daemon) reconcileEgressRoutes(p *egressPath, alive map[string]bool, fresh []*container) {
	d.mu.Lock()
	apps := slices.Collect(maps.Keys(d.reg.byApp))
	nets := slices.Collect(maps.Keys(d.reg.appNets))
	d.mu.Unlock()

	routes := make(map[string]appRoute, len(apps))
	var changed []string
	for _, app := range apps {
		r := d.appRoute(p, app, alive)
		routes[app] = r
		if old, ok := p.routes[app]; !ok || !old.equal(r) {
			changed = append(changed, app)
		}
	}
	var todo []*container
	d.mu.Lock()
	for _, app := range changed {
		for _, c := range d.reg.byApp[app] {
			todo = append(todo, c)
		}
	}
	d.mu.Unlock()
	for _, c := range fresh {
		if !slices.Contains(changed, c.info.App) {
			todo = append(todo, c)
		}
	}
	failed := make(map[string]bool)
	for _, c := range todo {
		if err := c.attached.SetEgress(routes[c.info.App].route(c.info.App, c.info.Network)); err != nil {
			d.log.Warn("egress route", "id", c.info.ID, "err", err)
			failed[c.info.App] = true
		}
	}
	for app := range failed {
		delete(routes, app) // not given: tried again next time
	}
	p.routes = routes

	wantReturns := make(map[uint32][]netip.Addr)
	returnNet := make(map[uint32]string)
	for _, an := range nets {
		r, ok := routes[an.app]
		if !ok || !r.dedicated || len(r.gws) == 0 {
			continue
		}
		vni := records.EgressVNI(an.app, an.pn)
		for _, g := range r.gws {
			if !slices.Contains(wantReturns[vni], g.Overlay) {
				wantReturns[vni] = append(wantReturns[vni], g.Overlay)
			}
		}
		returnNet[vni] = an.pn
	}
	// Every time, not only on change: the router binds a return to the
	// network's current table, which goes and comes back with its ports.
	for vni, gws := range wantReturns {
		pn := returnNet[vni]
		if err := d.router.SetEgressReturn(vni, records.VNI(pn), pn, gws); err != nil {
			d.log.Warn("egress return", "vni", vni, "err", err)
			continue
		}
		p.returns[vni] = true
	}
	for vni := range p.returns {
		if _, ok := wantReturns[vni]; !ok {
			d.router.SetEgressReturn(vni, 0, "", nil)
			delete(p.returns, vni)
		}
	}
}

// appRoute computes the route of app's containers from its assignments,
// the gateways' liveness and the overlay probes. Callers hold p.mu.
func (d *Daemon) appRoute(p *egressPath, app string, alive map[string]bool) appRoute {
	targets := d.egressTargets(app)
	r := appRoute{dedicated: targets != nil}
	for _, tg := range targets {
		if tg.Gateway == d.cfg.Name || !tg.Overlay.IsValid() {
			// A gateway does not egress its own containers: the overlay
			// cannot carry a frame to its own node. With no other gateway
			// the route stays empty: node egress would break the promise.
			continue
		}
		answers := true
		if pr := p.probes[tg.Overlay]; pr != nil {
			answers = pr.ok
		}
		r.gws = append(r.gws, router.EgressGateway{
			Overlay: tg.Overlay, New: tg.Healthy && alive[tg.Gateway] && answers, Existing: alive[tg.Gateway],
		})
	}
	return r
}

// closeEgressPath closes the gateway NATs (daemon shutdown).
func (d *Daemon) closeEgressPath() {
	p := d.egress
	p.mu.Lock()
	stacks := p.gw.stacks
	p.gw.stacks = make(map[gwKey]*stack.Stack)
	p.mu.Unlock()
	for _, st := range stacks {
		st.Close()
	}
}

// Workers probe their apps' gateways over the overlay (router.ProbeOverlay)
// so that a gateway that stops answering gets no new flows within about
// overlayProbeTimeout, without waiting for memberlist to declare it dead
// (seconds with the LAN timings). Existing flows stay while memberlist
// says the gateway is alive: a short loss must not move them.
const (
	overlayProbeInterval = 200 * time.Millisecond
	overlayProbeTimeout  = 700 * time.Millisecond
	// overlayProbeGrace covers the WireGuard handshake with a gateway
	// probed for the first time.
	overlayProbeGrace = 2 * time.Second
)

type gwProbe struct {
	first time.Time // first probed
	ok    bool      // answered within overlayProbeTimeout (or in grace)
}

func (d *Daemon) overlayProbeLoop(ctx context.Context) {
	defer d.loops.Done()
	tick := time.NewTicker(overlayProbeInterval)
	defer tick.Stop()
	for {
		gws := d.gatewaysToProbe()
		d.router.ProbeOverlay(gws)
		if d.updateProbes(gws, time.Now()) {
			d.reconcileEgressPath()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// gatewaysToProbe returns the overlay addresses of the gateways of the
// apps of this node's containers (not this node).
func (d *Daemon) gatewaysToProbe() []netip.Addr {
	d.mu.Lock()
	apps := slices.Collect(maps.Keys(d.reg.byApp))
	d.mu.Unlock()
	var out []netip.Addr
	seen := make(map[netip.Addr]bool)
	for _, app := range apps {
		for _, tg := range d.egressTargets(app) {
			if tg.Gateway != d.cfg.Name && tg.Overlay.IsValid() && !seen[tg.Overlay] {
				seen[tg.Overlay] = true
				out = append(out, tg.Overlay)
			}
		}
	}
	return out
}

// updateProbes records which gateways answer and reports whether any
// changed.
func (d *Daemon) updateProbes(gws []netip.Addr, now time.Time) bool {
	p := d.egress
	p.mu.Lock()
	defer p.mu.Unlock()
	changed := false
	keep := make(map[netip.Addr]bool, len(gws))
	for _, gw := range gws {
		keep[gw] = true
		pr := p.probes[gw]
		if pr == nil {
			pr = &gwProbe{first: now, ok: true}
			p.probes[gw] = pr
		}
		seen := d.router.OverlaySeen(gw)
		ok := now.Sub(pr.first) < overlayProbeGrace || (!seen.IsZero() && now.Sub(seen) < overlayProbeTimeout)
		if ok != pr.ok {
			pr.ok = ok
			changed = true
			if ok {
				d.log.Info("gateway answers over the overlay again", "overlay", gw)
			} else {
				d.log.Warn("gateway does not answer over the overlay: no new egress flows to it", "overlay", gw, "last_answer", seen)
			}
		}
	}
	for gw := range p.probes {
		if !keep[gw] {
			delete(p.probes, gw)
		}
	}
	return changed
}
