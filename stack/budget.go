package stack

// The node-wide egress budget: every network's stack takes its host sockets
// (TCP dials and connections, UDP flows, ping sockets) and the worst-case
// buffer memory of its flows from one Budget, so no container and no
// network can exhaust the daemon's file descriptors or memory for the
// others, for gossip, DNS upstreams or attach (those live in the reserve
// outside the budget; see DefaultBudget).
//
// Fairness, per resource (fds, memory), checked on each new flow:
//
//  1. the node: used + want ≤ limit, else refused "node_fds" /
//     "node_memory";
//  2. the network: within its fair share (limit / networks holding
//     something, itself included, at most the borrow line) it is always
//     admitted; above it, only
//     while the node stays under the borrow line (3/4 of the limit) and
//     the network under that line too, else "network_share". So a lone
//     network may use 3/4 of the node, and the last quarter is kept for
//     networks below their share;
//  3. the container: never more than half of the node ("container_max");
//     above its share of its network's share only under the borrow line,
//     else "container_share".
//
// A refused TCP SYN gets a RST, a refused UDP datagram or echo request an
// ICMP destination unreachable (administratively prohibited): the container
// fails at once, it never waits.

import (
	"net/netip"
	"sync"
	"sync/atomic"
)

// Refusal reasons of a Budget, as shown in status.
const (
	RefusedNodeFDs        = "node_fds"
	RefusedNodeMemory     = "node_memory"
	RefusedNetworkShare   = "network_share"
	RefusedContainerShare = "container_share"
	RefusedContainerMax   = "container_max"
)

var refusalReasons = [...]string{RefusedNodeFDs, RefusedNodeMemory, RefusedNetworkShare, RefusedContainerShare, RefusedContainerMax}

// BudgetLimits are the node-wide limits of a Budget.
type BudgetLimits struct {
	// FDs is the number of host sockets egress may hold in all.
	FDs int
	// Memory bounds the flow buffers of egress in bytes: each flow is
	// charged the most its buffers can hold (tcpFlowCharge, udpFlowCharge).
	Memory int64
}

// Budget is shared by the stacks of a node (EgressConfig.Budget). Its
// methods are safe for concurrent use; they run once per new flow, never
// per packet.
type Budget struct {
	lim BudgetLimits

	mu   sync.Mutex
	used usage
	nets map[string]*netUse

	refused [len(refusalReasons)]atomic.Uint64
}

type usage struct {
	fds int
	mem int64
}

func (u usage) zero() bool { return u.fds == 0 && u.mem == 0 }

type netUse struct {
	usage
	clients map[netip.Addr]*usage
}

// NewBudget returns a budget with limits lim; both must be positive.
func NewBudget(lim BudgetLimits) *Budget {
	return &Budget{lim: lim, nets: make(map[string]*netUse)}
}

// Limits returns the budget's limits.
func (b *Budget) Limits() BudgetLimits { return b.lim }

// BudgetStats is a snapshot of a budget.
type BudgetStats struct {
	Limits     BudgetLimits
	FDsUsed    int
	MemoryUsed int64
	Networks   int               // networks holding something now
	Refused    map[string]uint64 // by reason, since start
}

// Stats returns a snapshot.
func (b *Budget) Stats() BudgetStats {
	b.mu.Lock()
	st := BudgetStats{Limits: b.lim, FDsUsed: b.used.fds, MemoryUsed: b.used.mem, Networks: len(b.nets)}
	b.mu.Unlock()
	st.Refused = make(map[string]uint64, len(refusalReasons))
	for i, r := range refusalReasons {
		st.Refused[r] = b.refused[i].Load()
	}
	return st
}

// acquire takes one host socket and mem bytes for a flow of client in
// network; it returns "" or the reason of the refusal (counted).
func (b *Budget) acquire(network string, client netip.Addr, mem int64) string {
	want := usage{fds: 1, mem: mem}
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.nets[network]
	nets := len(b.nets)
	if n == nil {
		nets++
	}
	var c *usage
	clients := 0
	if n != nil {
		c = n.clients[client]
		clients = len(n.clients)
	}
	if c == nil {
		clients++
	}
	var netHeld, clientHeld usage
	if n != nil {
		netHeld = n.usage
	}
	if c != nil {
		clientHeld = *c
	}
	reason := b.checkLocked(want, netHeld, clientHeld, nets, clients)
	if reason != "" {
		b.count(reason)
		return reason
	}
	if n == nil {
		n = &netUse{clients: make(map[netip.Addr]*usage)}
		b.nets[network] = n
	}
	if c == nil {
		c = &usage{}
		n.clients[client] = c
	}
	b.used.fds++
	b.used.mem += mem
	n.fds++
	n.mem += mem
	c.fds++
	c.mem += mem
	return ""
}

// checkLocked applies the rules of the file comment to both resources.
func (b *Budget) checkLocked(want, net, client usage, nets, clients int) string {
	type res struct {
		limit, used, want, net, client int64
		node                           string
	}
	for _, r := range [2]res{
		{int64(b.lim.FDs), int64(b.used.fds), int64(want.fds), int64(net.fds), int64(client.fds), RefusedNodeFDs},
		{b.lim.Memory, b.used.mem, want.mem, net.mem, client.mem, RefusedNodeMemory},
	} {
		if r.want == 0 {
			continue
		}
		if r.used+r.want > r.limit {
			return r.node
		}
		borrow := r.limit - r.limit/4
		underLine := r.used+r.want <= borrow
		netShare := min(r.limit/int64(nets), borrow)
		if r.net+r.want > netShare && (!underLine || r.net+r.want > borrow) {
			return RefusedNetworkShare
		}
		if r.client+r.want > r.limit/2 {
			return RefusedContainerMax
		}
		if r.client+r.want > netShare/int64(clients) && !underLine {
			return RefusedContainerShare
		}
	}
	return ""
}

func (b *Budget) count(reason string) {
	for i, r := range refusalReasons {
		if r == reason {
			b.refused[i].Add(1)
			return
		}
	}
}

// release gives back what acquire took.
func (b *Budget) release(network string, client netip.Addr, mem int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.nets[network]
	if n == nil {
		return // cannot happen: acquire created it
	}
	b.used.fds--
	b.used.mem -= mem
	n.fds--
	n.mem -= mem
	if c := n.clients[client]; c != nil {
		c.fds--
		c.mem -= mem
		if c.zero() {
			delete(n.clients, client)
		}
	}
	if n.zero() {
		delete(b.nets, network)
	}
}

// BudgetShare is what one tenant of a Budget holds now.
type BudgetShare struct {
	FDs    int
	Memory int64 // bytes, the worst case of its flows
}

// NetworkShare is what one network holds now, and each of its clients
// (container addresses) that holds something.
type NetworkShare struct {
	BudgetShare
	Clients map[netip.Addr]BudgetShare
}

// Shares returns what every network holding something holds now, by the
// name its stacks give it (EgressConfig.Network). It copies the tables: a
// caller per scrape, never per packet.
func (b *Budget) Shares() map[string]NetworkShare {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]NetworkShare, len(b.nets))
	for name, n := range b.nets {
		ns := NetworkShare{
			BudgetShare: BudgetShare{FDs: n.fds, Memory: n.mem},
			Clients:     make(map[netip.Addr]BudgetShare, len(n.clients)),
		}
		for a, c := range n.clients {
			ns.Clients[a] = BudgetShare{FDs: c.fds, Memory: c.mem}
		}
		out[name] = ns
	}
	return out
}
