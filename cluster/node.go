package cluster

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"time"
)

// NodeState is a node's membership state as this node sees it.
type NodeState int

const (
	StateAlive NodeState = iota
	// StateSuspect: our own probes of the node failed and memberlist
	// suspects it; its entries stay visible until it is declared dead.
	// memberlist has no delegate for suspicion, so only suspicion raised by
	// this node's probes is shown, not suspicion learned through gossip.
	StateSuspect
	StateDead
	StateLeft // left gracefully (Close)
)

func (s NodeState) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateSuspect:
		return "suspect"
	case StateDead:
		return "dead"
	case StateLeft:
		return "left"
	}
	return fmt.Sprintf("state(%d)", int(s))
}

func (s NodeState) up() bool { return s == StateAlive || s == StateSuspect }

// Node is a snapshot of one cluster member.
type Node struct {
	Name  string
	Addr  netip.AddrPort // gossip address
	Meta  NodeMeta
	State NodeState
	Self  bool
	Since time.Time // when State last changed, on this node's clock
	// Identity says whether the node's metadata was signed by the key
	// pinned for its name. Meta is the last metadata that was (zero if
	// none ever was): a node whose identity is not IdentityOK must not be
	// given traffic, and its records are not merged.
	Identity IdentityState
}

// nodeInfo is the Cluster's record of a peer, guarded by Cluster.mu.
type nodeInfo struct {
	addr     netip.AddrPort
	meta     NodeMeta // the last trusted metadata
	trusted  bool     // meta is set
	identity IdentityState
	refused  []byte // the last refused raw metadata, re-checked on Unpin
	state    NodeState
	since    time.Time
}

func addrPortOf(ip net.IP, port uint16) netip.AddrPort {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), port)
}

// Nodes returns this node and every peer seen: alive, suspect, dead (until
// reaped, after memberlist's GossipToTheDeadTime) and left, sorted by name.
func (c *Cluster) Nodes() []Node {
	c.mu.Lock()
	out := make([]Node, 0, len(c.nodes)+1)
	out = append(out, Node{
		Name:  c.name,
		Addr:  c.local,
		Meta:  c.meta,
		State: StateAlive,
		Self:  true,
		Since: c.started,
	})
	for name, n := range c.nodes {
		out = append(out, Node{
			Name:     name,
			Addr:     n.addr,
			Meta:     n.meta,
			State:    n.state,
			Since:    n.since,
			Identity: n.identity,
		})
	}
	c.mu.Unlock()
	for i := range out {
		out[i].Meta.EgressIPs = append([]netip.Addr(nil), out[i].Meta.EgressIPs...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// peersUpLocked counts peers that are alive or suspect.
func (c *Cluster) peersUpLocked() int {
	n := 0
	for _, p := range c.nodes {
		if p.state.up() {
			n++
		}
	}
	return n
}

// setPeerLocked updates a peer's state and keeps the queue's cluster size
// estimate in step.
func (c *Cluster) setPeerLocked(name string, n *nodeInfo) {
	c.nodes[name] = n
	c.numNodes.Store(int32(1 + c.peersUpLocked()))
}

// markSuspect is fed from memberlist's log line for a failed probe of ours.
func (c *Cluster) markSuspect(name string) {
	c.mu.Lock()
	n := c.nodes[name]
	changed := n != nil && n.state == StateAlive
	if changed {
		n.state = StateSuspect
		n.since = time.Now()
	}
	c.mu.Unlock()
	if changed {
		c.signal()
	}
}

// clearSuspect is called when a direct probe of ours was acked.
func (c *Cluster) clearSuspect(name string) {
	c.mu.Lock()
	n := c.nodes[name]
	changed := n != nil && n.state == StateSuspect
	if changed {
		n.state = StateAlive
		n.since = time.Now()
	}
	c.mu.Unlock()
	if changed {
		c.signal()
	}
}

// reap forgets peers that have been dead or left for longer than
// memberlist's GossipToTheDeadTime, after which memberlist forgets them too;
// their entries go with them.
func (c *Cluster) reap(now time.Time) {
	var gone []string
	c.mu.Lock()
	for name, n := range c.nodes {
		if !n.state.up() && now.Sub(n.since) > c.reapAfter {
			delete(c.nodes, name)
			delete(c.byes, name)
			gone = append(gone, name)
		}
	}
	c.mu.Unlock()
	for _, name := range gone {
		c.log.Debug("reaped node", "node", name)
		c.metas.forget(name)
		c.store.forgetOwner(name)
	}
}

// staleLife says whether m, genuine metadata of the node, is of an earlier
// life than the trusted one that is up now: a replay. (A life after the
// one we saw die may start "earlier" if the node's clock was set back.)
func (n *nodeInfo) staleLife(m NodeMeta) bool {
	return n.trusted && m.BootID != n.meta.BootID && m.Started < n.meta.Started
}
