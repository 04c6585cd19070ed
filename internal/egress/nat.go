package egress

import (
	"maps"
	"net/netip"

	"github.com/vrouter/vrouter/internal/records"
	"github.com/vrouter/vrouter/router"
)

// The gateway side of the data path: for each app this gateway holds an IP
// for and each network the app has containers in (on other nodes), a NAT
// to that IP, and remote entries for those containers in the egress VNI's
// table. It follows the container records with a records.Follower, so a
// container attached anywhere costs the gateway one entry, not a pass over
// the cluster.

type gwKey struct {
	vni uint32
	net string // records.EgressNet of the app and network: the owner of vni's table
	ip  netip.Addr
}

// gwEntry is what one container record asks of this gateway: an entry for
// addr in k's table, pointing at its node.
type gwEntry struct {
	k    gwKey
	addr netip.Addr
	node [4]byte
}

// gatewayPath is the gateway side's state, guarded by Path.mu.
type gatewayPath struct {
	nats    map[gwKey]NAT
	remotes map[gwKey]map[netip.Addr][4]byte // remote entries installed per NAT
	want    *records.Follower[gwEntry]       // c/ key → the entry its record asks for
	users   map[gwKey]int                    // keys in want per NAT: the NAT lives while > 0

	held     map[string]netip.Addr // app → IP, as last applied
	overlays map[string][4]byte    // live nodes, as last applied
}

func newGatewayPath(v *records.ContainerView) gatewayPath {
	return gatewayPath{
		nats:    make(map[gwKey]NAT),
		remotes: make(map[gwKey]map[netip.Addr][4]byte),
		want:    records.NewFollower[gwEntry](v),
		users:   make(map[gwKey]int),
	}
}

// reconcileGateway brings the NATs and their remote entries in line with
// the assignments this gateway holds and the containers of the cluster.
// overlays are the live (alive or suspect) nodes' overlay addresses.
// Callers hold p.mu.
func (p *Path) reconcileGateway(overlays map[string][4]byte) {
	g := &p.gw
	held := p.assign.Local()
	if len(held) == 0 && g.want.Len() == 0 && len(g.nats) == 0 {
		// Not a gateway of anything: skip the records, read them all once
		// this node holds an IP.
		g.want.Invalidate()
		g.held = held
		return
	}
	full := !maps.Equal(held, g.held) || !maps.Equal(overlays, g.overlays)
	g.held, g.overlays = held, overlays
	want := func(c records.Claim) (gwEntry, bool) {
		if c.Owner == p.self {
			return gwEntry{}, false
		}
		ip, holds := held[c.App]
		node, live := overlays[c.Owner]
		return gwEntry{k: gwKey{vni: records.EgressVNI(c.App, c.PN), net: records.EgressNet(c.App, c.PN), ip: ip}, addr: c.Addr, node: node}, holds && live
	}
	g.want.Sync(full, want, func(_ string, cur, next *gwEntry) (*gwEntry, error) {
		return p.applyGatewayEntry(cur, next)
	})
}

// applyGatewayEntry changes the entry of one container record from cur to
// next (nil: none) and returns the entry the record now holds. Callers
// hold p.mu.
func (p *Path) applyGatewayEntry(cur, next *gwEntry) (*gwEntry, error) {
	g := &p.gw
	if cur != nil && (next == nil || cur.k != next.k || cur.addr != next.addr) {
		if _, ok := g.remotes[cur.k][cur.addr]; ok {
			p.dp.RemoveRemote(cur.k.vni, cur.k.net, cur.addr)
			delete(g.remotes[cur.k], cur.addr)
		}
		if g.users[cur.k]--; g.users[cur.k] <= 0 {
			delete(g.users, cur.k)
			p.closeNAT(cur.k)
		}
		cur = nil
	}
	if next == nil {
		return nil, nil
	}
	if cur == nil {
		g.users[next.k]++
	}
	e := *next
	if g.nats[e.k] == nil {
		n, err := p.startNAT(e.k)
		if err != nil {
			p.log.Error("gateway NAT", "vni", e.k.vni, "ip", e.k.ip, "err", err)
			return next, err
		}
		g.nats[e.k] = n
		g.remotes[e.k] = make(map[netip.Addr][4]byte)
	}
	if node, ok := g.remotes[e.k][e.addr]; ok && node == e.node {
		return next, nil
	}
	if err := p.dp.SetRemote(e.k.vni, e.k.net, e.addr, netip.AddrFrom4(e.node)); err != nil {
		p.log.Warn("gateway remote entry", "vni", e.k.vni, "addr", e.addr, "err", err)
		return next, err
	}
	g.remotes[e.k][e.addr] = e.node
	return next, nil
}

// closeNAT unhooks and closes the NAT of k, which no container record
// needs any more. Callers hold p.mu.
func (p *Path) closeNAT(k gwKey) {
	g := &p.gw
	for addr := range g.remotes[k] {
		p.dp.RemoveRemote(k.vni, k.net, addr)
	}
	delete(g.remotes, k)
	n := g.nats[k]
	if n == nil {
		return // it never started
	}
	p.dp.SetLocal(k.vni, k.net, nil, router.LocalOptions{})
	delete(g.nats, k)
	// Closing waits for flows to abort: not under p.mu, not on the
	// reconcile goroutine.
	p.closers.Go(func() { n.Close() })
}

// startNAT starts the NAT of one app's IP for one network's egress VNI
// and hooks it to the router. Callers hold p.mu.
func (p *Path) startNAT(k gwKey) (NAT, error) {
	n, err := p.newNAT(k.vni, k.ip)
	if err != nil {
		return nil, err
	}
	if err := p.dp.SetLocal(k.vni, k.net, n, router.LocalOptions{Egress: true}); err != nil {
		n.Close()
		return nil, err
	}
	p.log.Info("gateway NAT started", "egress_vni", k.vni, "egress_ip", k.ip)
	return n, nil
}
