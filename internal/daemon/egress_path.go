package daemon

import (
	"context"
	"hash/fnv"
	"net/netip"
	"sync"
	"time"

	"github.com/vrouter/vrouter/cluster"
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

// EgressVNI derives the VNI of an app's egress traffic from one network:
// per app and network, so that at the gateway flows of networks with the
// same container addresses never share a table or a NAT.
func EgressVNI(app, pn string) uint32 {
	h := fnv.New32a()
	h.Write([]byte("egress\x00" + app + "\x00" + pn))
	v := h.Sum32() & 0xffffff
	if v == 0 {
		v = 1
	}
	return v
}

type gwKey struct {
	vni uint32
	ip  netip.Addr
}

// egressPath is the state of path 5 on this node, owned by
// reconcileEgressPath (serialised by mu).
type egressPath struct {
	mu      sync.Mutex
	probes  map[netip.Addr]*gwProbe          // worker: overlay probes of gateways
	returns map[uint32]bool                  // egress VNIs with a return entry (worker)
	stacks  map[gwKey]*stack.Stack           // gateway NATs
	remotes map[gwKey]map[netip.Addr][4]byte // gateway: remote entries per NAT
}

func newEgressPath() *egressPath {
	return &egressPath{
		probes:  make(map[netip.Addr]*gwProbe),
		returns: make(map[uint32]bool),
		stacks:  make(map[gwKey]*stack.Stack),
		remotes: make(map[gwKey]map[netip.Addr][4]byte),
	}
}

// reconcileEgressPath brings routes, returns and gateway NATs in line with
// the assignments and the containers of the cluster.
func (d *Daemon) reconcileEgressPath() {
	p := d.egress
	p.mu.Lock()
	defer p.mu.Unlock()

	alive := make(map[string]bool)
	overlays := make(map[string][4]byte) // of live nodes
	self := d.cfg.Name
	for _, n := range d.cluster.Nodes() {
		alive[n.Name] = n.State == cluster.StateAlive || n.State == cluster.StateSuspect
		if alive[n.Name] && n.Meta.Overlay.IsValid() {
			overlays[n.Name] = n.Meta.Overlay.As4()
		}
	}

	// Worker side.
	d.mu.Lock()
	local := make([]*container, 0, len(d.reg.containers))
	for _, c := range d.reg.containers {
		local = append(local, c)
	}
	vniOf := make(map[string]uint32, len(d.reg.networks))
	for id, n := range d.reg.networks {
		vniOf[id] = n.vni
	}
	d.mu.Unlock()
	wantReturns := make(map[uint32][]netip.Addr)
	returnNet := make(map[uint32]uint32)
	for _, c := range local {
		targets := d.egressTargets(c.info.App)
		var route *router.EgressRoute
		for _, tg := range targets {
			if tg.Gateway == self || !tg.Overlay.IsValid() {
				continue
			}
			if route == nil {
				route = &router.EgressRoute{VNI: EgressVNI(c.info.App, c.info.Network)}
			}
			answers := true
			if pr := p.probes[tg.Overlay]; pr != nil {
				answers = pr.ok
			}
			route.Gateways = append(route.Gateways, router.EgressGateway{
				Overlay: tg.Overlay, New: tg.Healthy && alive[tg.Gateway] && answers, Existing: alive[tg.Gateway],
			})
		}
		if targets != nil && route == nil {
			// Dedicated egress whose only gateways are this node: no route
			// that could carry it, and node egress would break the promise.
			route = &router.EgressRoute{VNI: EgressVNI(c.info.App, c.info.Network)}
		}
		if err := c.attached.SetEgress(route); err != nil {
			d.log.Warn("egress route", "id", c.info.ID, "err", err)
			continue
		}
		if route != nil && len(route.Gateways) > 0 {
			for _, g := range route.Gateways {
				wantReturns[route.VNI] = append(wantReturns[route.VNI], g.Overlay)
			}
			returnNet[route.VNI] = vniOf[c.info.Network]
		}
	}
	for vni, gws := range wantReturns {
		if err := d.router.SetEgressReturn(vni, returnNet[vni], gws); err != nil {
			d.log.Warn("egress return", "vni", vni, "err", err)
			continue
		}
		p.returns[vni] = true
	}
	for vni := range p.returns {
		if _, ok := wantReturns[vni]; !ok {
			d.router.SetEgressReturn(vni, 0, nil)
			delete(p.returns, vni)
		}
	}

	// Gateway side.
	held := d.localEgress()
	if len(held) == 0 && len(p.stacks) == 0 {
		return
	}
	wantRemotes := make(map[gwKey]map[netip.Addr][4]byte)
	for _, c := range d.remoteContainers() {
		ip, ok := held[c.App]
		if !ok {
			continue
		}
		node, ok := overlays[c.Node]
		addr, err := netip.ParseAddr(c.IP)
		if !ok || err != nil {
			continue
		}
		k := gwKey{vni: EgressVNI(c.App, c.Network), ip: ip}
		if wantRemotes[k] == nil {
			wantRemotes[k] = make(map[netip.Addr][4]byte)
		}
		wantRemotes[k][addr] = node
	}
	for k, want := range wantRemotes {
		if p.stacks[k] == nil {
			st, err := d.newGatewayStack(k)
			if err != nil {
				d.log.Error("gateway NAT", "vni", k.vni, "ip", k.ip, "err", err)
				continue
			}
			p.stacks[k] = st
			p.remotes[k] = make(map[netip.Addr][4]byte)
		}
		have := p.remotes[k]
		for addr := range have {
			if _, ok := want[addr]; !ok {
				d.router.RemoveRemote(k.vni, addr)
				delete(have, addr)
			}
		}
		for addr, node := range want {
			if have[addr] == node {
				continue
			}
			if err := d.router.SetRemote(k.vni, addr, netip.AddrFrom4(node)); err != nil {
				d.log.Warn("gateway remote entry", "vni", k.vni, "addr", addr, "err", err)
				continue
			}
			have[addr] = node
		}
	}
	for k, st := range p.stacks {
		if _, ok := wantRemotes[k]; ok {
			continue
		}
		for addr := range p.remotes[k] {
			d.router.RemoveRemote(k.vni, addr)
		}
		d.router.SetLocal(k.vni, nil, router.LocalOptions{})
		delete(p.stacks, k)
		delete(p.remotes, k)
		// Closing waits for flows to abort: not on the reconcile loop.
		d.watchers.Go(func() { st.Close() })
	}
}

// newGatewayStack starts the NAT of one app's IP for one network's egress
// VNI and hooks it to the router.
func (d *Daemon) newGatewayStack(k gwKey) (*stack.Stack, error) {
	eg := d.egressConfig()
	eg.Source = k.ip
	rt := d.router
	vni := k.vni
	st, err := stack.New(stack.Config{
		Name:     "egress " + k.ip.String(),
		Addr:     router.DefaultResolver,
		MTU:      d.cfg.MTU,
		Headroom: router.Headroom,
		Output:   func(bufs [][]byte, offset int) { rt.WriteLocal(vni, bufs, offset) },
		Egress:   eg,
		Logger:   d.log.With("component", "gateway", "egress_ip", k.ip),
	})
	if err != nil {
		return nil, err
	}
	if err := rt.SetLocal(vni, st, router.LocalOptions{Egress: true}); err != nil {
		st.Close()
		return nil, err
	}
	d.log.Info("gateway NAT started", "egress_vni", vni, "egress_ip", k.ip)
	return st, nil
}

// closeEgressPath closes the gateway NATs (daemon shutdown).
func (d *Daemon) closeEgressPath() {
	p := d.egress
	p.mu.Lock()
	stacks := p.stacks
	p.stacks = make(map[gwKey]*stack.Stack)
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
	apps := make(map[string]bool)
	for _, c := range d.reg.containers {
		apps[c.info.App] = true
	}
	d.mu.Unlock()
	var out []netip.Addr
	seen := make(map[netip.Addr]bool)
	for app := range apps {
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
