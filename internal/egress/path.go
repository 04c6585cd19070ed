package egress

import (
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/internal/records"
	"github.com/vrouter/vrouter/router"
)

// Path is the dedicated egress data path of this node, configured from
// the Assigner's snapshot on every Reconcile.
type Path struct {
	self    string
	members Members
	dp      Datapath
	apps    LocalApps
	assign  *Assigner
	newNAT  func(vni uint32, ip netip.Addr) (NAT, error)
	log     *slog.Logger
	closers sync.WaitGroup // NATs closing (Close waits for them)

	mu      sync.Mutex
	probes  map[netip.Addr]*overlayProbeState // worker: overlay probes of gateways
	routes  map[string]appRoute               // worker: the route last given to every local container of each app
	returns map[uint32]bool                   // egress VNIs with a return entry (worker)
	gw      gatewayPath                       // nat.go
	closed  bool                              // Close has run: no NAT starts
	// failovers follow each app's active gateway (metrics.go).
	failovers map[string]*failover
}

func newPath(d Deps, a *Assigner) *Path {
	return &Path{
		self:    d.Self,
		members: d.Members,
		dp:      d.Datapath,
		apps:    d.Apps,
		assign:  a,
		newNAT:  d.NewNAT,
		log:     d.Logger,
		probes:  make(map[netip.Addr]*overlayProbeState),
		routes:  make(map[string]appRoute),
		returns: make(map[uint32]bool),
		gw:      newGatewayPath(d.View),

		failovers: make(map[string]*failover),
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

// Reconcile brings routes, returns and gateway NATs in line with the
// assignments and the containers of the cluster. fresh are containers
// just attached, which get their route even if their app's did not change.
// Its cost grows with the apps of this node, the containers whose route
// changes and the container records that changed, not with all of them.
func (p *Path) Reconcile(fresh ...Local) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	alive := make(map[string]bool)
	overlays := make(map[string][4]byte) // of live nodes
	for _, n := range p.members.Nodes() {
		alive[n.Name] = n.State == cluster.StateAlive || n.State == cluster.StateSuspect
		if alive[n.Name] && n.Meta.Overlay.IsValid() {
			overlays[n.Name] = n.Meta.Overlay.As4()
		}
	}
	p.reconcileRoutes(alive, fresh)
	p.reconcileGateway(overlays)
	p.observeFailovers(alive, time.Now())
}

// reconcileRoutes is the worker side: each local container's route and
// the router's returns for the apps' egress VNIs. Callers hold p.mu.
func (p *Path) reconcileRoutes(alive map[string]bool, fresh []Local) {
	apps := p.apps.Apps()
	nets := p.apps.AppNets()

	routes := make(map[string]appRoute, len(apps))
	var changed []string
	for _, app := range apps {
		r := p.appRoute(app, alive)
		routes[app] = r
		if old, ok := p.routes[app]; !ok || !old.equal(r) {
			changed = append(changed, app)
		}
	}
	var todo []Local
	if len(changed) > 0 {
		todo = p.apps.Containers(changed)
	}
	for _, c := range fresh {
		if !slices.Contains(changed, c.App) {
			todo = append(todo, c)
		}
	}
	failed := make(map[string]bool)
	for _, c := range todo {
		if err := c.Port.SetEgress(routes[c.App].route(c.App, c.Network)); err != nil {
			p.log.Warn("egress route", "id", c.ID, "err", err)
			failed[c.App] = true
		}
	}
	for app := range failed {
		delete(routes, app) // not given: tried again next time
	}
	p.routes = routes

	wantReturns := make(map[uint32][]netip.Addr)
	returnNet := make(map[uint32]string)
	for _, an := range nets {
		r, ok := routes[an.App]
		if !ok || !r.dedicated || len(r.gws) == 0 {
			continue
		}
		vni := records.EgressVNI(an.App, an.Network)
		for _, g := range r.gws {
			if !slices.Contains(wantReturns[vni], g.Overlay) {
				wantReturns[vni] = append(wantReturns[vni], g.Overlay)
			}
		}
		returnNet[vni] = an.Network
	}
	// Every time, not only on change: the router binds a return to the
	// network's current table, which goes and comes back with its ports.
	for vni, gws := range wantReturns {
		pn := returnNet[vni]
		network, ok := p.apps.NetworkVNI(pn)
		if !ok {
			continue // its last container just left
		}
		if err := p.dp.SetEgressReturn(vni, network, pn, gws); err != nil {
			p.log.Warn("egress return", "vni", vni, "err", err)
			continue
		}
		p.returns[vni] = true
	}
	for vni := range p.returns {
		if _, ok := wantReturns[vni]; !ok {
			p.dp.SetEgressReturn(vni, 0, "", nil)
			delete(p.returns, vni)
		}
	}
}

// appRoute computes the route of app's containers from its assignments,
// the gateways' liveness and the overlay probes. Callers hold p.mu.
func (p *Path) appRoute(app string, alive map[string]bool) appRoute {
	targets := p.assign.Targets(app)
	r := appRoute{dedicated: targets != nil}
	for _, tg := range targets {
		if tg.Gateway == p.self || !tg.Overlay.IsValid() {
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

// close closes the gateway NATs and waits until every NAT is closed
// (shutdown). After it no NAT starts.
func (p *Path) close() {
	p.mu.Lock()
	p.closed = true
	nats := p.gw.nats
	p.gw.nats = make(map[gwKey]NAT)
	p.mu.Unlock()
	for _, n := range nats {
		n.Close()
	}
	p.closers.Wait()
}

// Overlay probes: workers probe their apps' gateways over the overlay
// (router.ProbeOverlay) so that a gateway that stops answering gets no
// new flows within about overlayProbeTimeout, without waiting for
// memberlist to declare it dead (seconds with the LAN timings). Existing
// flows stay while memberlist says the gateway is alive: a short loss must
// not move them.
//
// A gateway is heard when anything comes from it over the overlay (an
// answer to a probe or traffic, router.OverlaySeen). It goes silent after
// overlayProbeMisses probe rounds in a row without a word from it, and no
// sooner than overlayProbeTimeout after it was last heard: rounds, so that
// a worker whose own probe loop was starved (a loaded machine) does not
// blame the gateway for rounds it never ran; time, so that rounds run
// late and then back to back do not add up to a verdict early. It answers
// again after overlayProbeRecover rounds in a row in which it was heard,
// so that a gateway losing most of its frames does not take new flows
// back at its first answer.
//
// The outage of a gateway's death is then between overlayProbeTimeout and
// overlayProbeTimeout+overlayProbeInterval, plus a reconcile (scenario 7
// of bench/README.md measures it).
const (
	overlayProbeInterval = 50 * time.Millisecond
	overlayProbeMisses   = 6
	overlayProbeTimeout  = overlayProbeMisses * overlayProbeInterval
	overlayProbeRecover  = 2
	// overlayProbeGrace covers the WireGuard handshake with a gateway
	// probed for the first time.
	overlayProbeGrace = 2 * time.Second
)

type overlayProbeState struct {
	first  time.Time // first probed
	seen   time.Time // last heard, as of the last round
	missed int       // rounds in a row in which it was not heard
	heard  int       // rounds in a row in which it was heard
	ok     bool      // not silent (or in grace)
}

// probeOverlay sends one round of overlay probes and reconciles when a
// gateway's verdict changed.
func (p *Path) probeOverlay(now time.Time) {
	gws := p.gatewaysToProbe()
	p.dp.ProbeOverlay(gws)
	if p.updateProbes(gws, now) {
		p.Reconcile()
	}
}

// gatewaysToProbe returns the overlay addresses of the gateways of the
// apps of this node's containers (not this node).
func (p *Path) gatewaysToProbe() []netip.Addr {
	var out []netip.Addr
	seen := make(map[netip.Addr]bool)
	for _, app := range p.apps.Apps() {
		for _, tg := range p.assign.Targets(app) {
			if tg.Gateway != p.self && tg.Overlay.IsValid() && !seen[tg.Overlay] {
				seen[tg.Overlay] = true
				out = append(out, tg.Overlay)
			}
		}
	}
	return out
}

// updateProbes is one probe round at now: it records which gateways were
// heard since the last round and reports whether any verdict changed.
func (p *Path) updateProbes(gws []netip.Addr, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	changed := false
	keep := make(map[netip.Addr]bool, len(gws))
	for _, gw := range gws {
		keep[gw] = true
		pr := p.probes[gw]
		if pr == nil {
			pr = &overlayProbeState{first: now, ok: true}
			p.probes[gw] = pr
		}
		if ok := pr.round(p.dp.OverlaySeen(gw), now); ok != pr.ok {
			pr.ok = ok
			changed = true
			if ok {
				p.log.Info("gateway answers over the overlay again", "overlay", gw)
			} else {
				p.log.Warn("gateway does not answer over the overlay: no new egress flows to it", "overlay", gw,
					"last_heard", pr.seen, "silent_for", now.Sub(pr.seen).Round(time.Millisecond), "rounds", pr.missed)
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

// round takes one probe round's news, seen being when the gateway was last
// heard (zero: never), and returns the verdict: true while it answers.
func (pr *overlayProbeState) round(seen time.Time, now time.Time) bool {
	if seen.After(pr.seen) {
		pr.seen = seen
		pr.missed = 0
		pr.heard++
	} else {
		pr.missed++
		pr.heard = 0
	}
	if now.Sub(pr.first) < overlayProbeGrace {
		return true
	}
	if !pr.ok {
		return pr.heard >= overlayProbeRecover
	}
	last := pr.seen
	if last.IsZero() {
		last = pr.first // never heard: silent from the grace's end on
	}
	return pr.missed < overlayProbeMisses || now.Sub(last) < overlayProbeTimeout
}
