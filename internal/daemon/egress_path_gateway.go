package daemon

import (
	"maps"
	"net/netip"

	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/stack"
)

// The gateway side of the dedicated egress data path: for each app this
// gateway holds an IP for and each network the app has containers in (on
// other nodes), a netstack that NATs to that IP, and remote entries for
// those containers in the egress VNI's table. It follows the container
// records through the container view's journal, so a container attached
// anywhere costs the gateway one entry, not a pass over the cluster.

type gwKey struct {
	vni uint32
	ip  netip.Addr
}

// gwEntry is what one container record asks of this gateway: an entry for
// addr in k's table, pointing at its node.
type gwEntry struct {
	k    gwKey
	addr netip.Addr
	node [4]byte
}

// gatewayPath is the gateway side's state, guarded by egressPath.mu.
type gatewayPath struct {
	stacks  map[gwKey]*stack.Stack           // NATs
	remotes map[gwKey]map[netip.Addr][4]byte // remote entries installed per NAT
	want    map[string]gwEntry               // c/ key → the entry its record asks for
	users   map[gwKey]int                    // keys in want per NAT: the NAT lives while > 0
	retry   map[string]bool                  // keys whose NAT or entry failed: tried again next time

	cursor   uint64                // in the store's journal (containerView.changes)
	held     map[string]netip.Addr // app → IP, as last applied
	overlays map[string][4]byte    // live nodes, as last applied
	stale    bool                  // changes were skipped: look at every key next time
}

func newGatewayPath() gatewayPath {
	return gatewayPath{
		stacks:  make(map[gwKey]*stack.Stack),
		remotes: make(map[gwKey]map[netip.Addr][4]byte),
		want:    make(map[string]gwEntry),
		users:   make(map[gwKey]int),
		retry:   make(map[string]bool),
	}
}

// reconcileGatewayPath brings the NATs and their remote entries in line
// with the assignments this gateway holds and the containers of the
// cluster. overlays are the live (alive or suspect) nodes' overlay
// addresses. Callers hold p.mu.
func (d *Daemon) reconcileGatewayPath(p *egressPath, overlays map[string][4]byte) {
	g := &p.gw
	held := d.localEgress()
	if len(held) == 0 && len(g.want) == 0 && len(g.stacks) == 0 {
		// Not a gateway of anything: skip the records, read them all once
		// this node holds an IP.
		g.stale, g.held = true, held
		return
	}
	keys, all := d.view.changes(&g.cursor)
	if all || g.stale || !maps.Equal(held, g.held) || !maps.Equal(overlays, g.overlays) {
		keys = d.view.keys()
		for k := range g.want {
			keys = append(keys, k)
		}
	}
	g.stale, g.held, g.overlays = false, held, overlays
	for k := range g.retry {
		keys = append(keys, k)
	}
	self := d.cfg.Name
	for _, w := range d.view.lookup(keys) {
		var e gwEntry
		wanted := false
		if w.ok && w.e.owner != self {
			ip, holds := held[w.e.app]
			node, live := overlays[w.e.owner]
			if holds && live {
				e, wanted = gwEntry{k: gwKey{vni: EgressVNI(w.e.app, w.e.pn), ip: ip}, addr: w.e.addr, node: node}, true
			}
		}
		d.applyGatewayEntry(g, w.key, e, wanted)
	}
}

// applyGatewayEntry makes the entry of one container record what it should
// be (wanted false: none). Callers hold p.mu.
func (d *Daemon) applyGatewayEntry(g *gatewayPath, key string, e gwEntry, wanted bool) {
	cur, had := g.want[key]
	if had && (!wanted || cur.k != e.k || cur.addr != e.addr) {
		if _, ok := g.remotes[cur.k][cur.addr]; ok {
			d.router.RemoveRemote(cur.k.vni, cur.addr)
			delete(g.remotes[cur.k], cur.addr)
		}
		delete(g.want, key)
		had = false
		if g.users[cur.k]--; g.users[cur.k] <= 0 {
			delete(g.users, cur.k)
			d.closeGatewayStack(g, cur.k)
		}
	}
	if !wanted {
		delete(g.retry, key)
		return
	}
	if !had {
		g.users[e.k]++
	}
	g.want[key] = e
	if g.stacks[e.k] == nil {
		st, err := d.newGatewayStack(e.k)
		if err != nil {
			d.log.Error("gateway NAT", "vni", e.k.vni, "ip", e.k.ip, "err", err)
			g.retry[key] = true
			return
		}
		g.stacks[e.k] = st
		g.remotes[e.k] = make(map[netip.Addr][4]byte)
	}
	if node, ok := g.remotes[e.k][e.addr]; ok && node == e.node {
		delete(g.retry, key)
		return
	}
	if err := d.router.SetRemote(e.k.vni, e.addr, netip.AddrFrom4(e.node)); err != nil {
		d.log.Warn("gateway remote entry", "vni", e.k.vni, "addr", e.addr, "err", err)
		g.retry[key] = true
		return
	}
	g.remotes[e.k][e.addr] = e.node
	delete(g.retry, key)
}

// closeGatewayStack unhooks and closes the NAT of k, which no container
// record needs any more.
func (d *Daemon) closeGatewayStack(g *gatewayPath, k gwKey) {
	for addr := range g.remotes[k] {
		d.router.RemoveRemote(k.vni, addr)
	}
	delete(g.remotes, k)
	st := g.stacks[k]
	if st == nil {
		return // it never started
	}
	d.router.SetLocal(k.vni, nil, router.LocalOptions{})
	delete(g.stacks, k)
	// Closing waits for flows to abort: not on the reconcile loop.
	d.watchers.Go(func() { st.Close() })
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
