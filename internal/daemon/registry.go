package daemon

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/egress"
	"github.com/vrouter/vrouter/internal/records"
	"github.com/vrouter/vrouter/router"
)

// container is one attached port and what the daemon knows about it.
type container struct {
	info     control.Container
	addr     netip.Addr
	key      string // identity of the container's netns, "" if unknown
	attached *router.Attached
}

// network is a private network with at least one local container.
type network struct {
	id    string
	vni   uint32
	addrs addrSet
}

// registry holds the node's containers and the per-network and per-app
// bookkeeping derived from them. It is guarded by Daemon.mu.
type registry struct {
	containers map[string]*container // by id
	byKey      map[string]*container // by netns identity
	networks   map[string]*network   // by PN id
	numbers    map[string]map[int]bool
	// byApp and appNets let the egress path reconcile by app rather than
	// walk every container.
	byApp   map[string]map[string]*container // app → id → container
	appNets map[egress.AppNet]int            // (app, network) → containers
	// vnis are this node's VNI claims (records.ClaimVNI) by network, and
	// claiming counts the attaches between claiming a network's VNI and
	// registering it: a claim is withdrawn only when its network has no
	// container and no attach is claiming it (releaseVNIsLocked).
	vnis     map[string]uint32
	claiming map[string]int
}

func newRegistry() *registry {
	return &registry{
		containers: make(map[string]*container),
		byKey:      make(map[string]*container),
		networks:   make(map[string]*network),
		numbers:    make(map[string]map[int]bool),
		byApp:      make(map[string]map[string]*container),
		appNets:    make(map[egress.AppNet]int),
		vnis:       make(map[string]uint32),
		claiming:   make(map[string]int),
	}
}

// network returns the PN, creating it with the VNI the cluster's claims
// gave it (records.ClaimVNI) on first use. Two local PNs with one VNI
// would share a forwarding table, so the second one is refused (nil)
// rather than mixed in: the claims make that happen only when they
// disagree, after a partition.
func (r *registry) network(id string, vni uint32) *network {
	n := r.networks[id]
	if n == nil {
		for _, other := range r.networks {
			if other.vni == vni {
				return nil
			}
		}
		n = &network{id: id, vni: vni}
		r.networks[id] = n
	}
	return n
}

// dropNetworkIfEmpty forgets a PN that has no container left, so that its
// VNI and bitmap do not pile up over the node's lifetime.
func (r *registry) dropNetworkIfEmpty(n *network) {
	if n.addrs.count == 0 {
		delete(r.networks, n.id)
	}
}

// reserve takes an address and a container number. It returns a *control.Error
// the CLI can show as is; on error nothing stays reserved.
func (r *registry) reserve(n *network, want netip.Addr, app, typ string, number int, takenAddrs map[netip.Addr]bool, takenNums map[int]bool) (netip.Addr, int, error) {
	addr := want
	if addr.IsValid() {
		if !n.addrs.take(addr) {
			return netip.Addr{}, 0, control.Errorf(control.CodeConflict, "address %s is already in use in network %s", addr, n.id)
		}
	} else {
		// Addresses held by other nodes count as used: pick from a copy.
		all := n.addrs
		for a := range takenAddrs {
			all.take(a)
		}
		var ok bool
		if addr, ok = all.lowestFree(); !ok {
			return netip.Addr{}, 0, control.Errorf(control.CodeFull, "network %s is full (%d containers)", n.id, all.count)
		}
		n.addrs.take(addr)
	}
	k := records.AppType(app, typ)
	used := r.numbers[k]
	if used == nil {
		used = make(map[int]bool)
		r.numbers[k] = used
	}
	if number == 0 {
		number = lowestFreeNumber(used, takenNums)
	} else if used[number] {
		n.addrs.release(addr)
		return netip.Addr{}, 0, control.Errorf(control.CodeConflict, "container number %d of %s type %s is already in use", number, app, typ)
	}
	used[number] = true
	return addr, number, nil
}

func (r *registry) release(n *network, addr netip.Addr, app, typ string, number int) {
	n.addrs.release(addr)
	k := records.AppType(app, typ)
	delete(r.numbers[k], number)
	if len(r.numbers[k]) == 0 {
		delete(r.numbers, k)
	}
	r.dropNetworkIfEmpty(n)
}

func (r *registry) add(c *container) {
	r.containers[c.info.ID] = c
	if c.key != "" {
		r.byKey[c.key] = c
	}
	if r.byApp[c.info.App] == nil {
		r.byApp[c.info.App] = make(map[string]*container)
	}
	r.byApp[c.info.App][c.info.ID] = c
	r.appNets[egress.AppNet{App: c.info.App, Network: c.info.Network}]++
}

func (r *registry) remove(c *container) {
	delete(r.containers, c.info.ID)
	if c.key != "" && r.byKey[c.key] == c {
		delete(r.byKey, c.key)
	}
	if cs := r.byApp[c.info.App]; cs[c.info.ID] == c {
		delete(cs, c.info.ID)
		if len(cs) == 0 {
			delete(r.byApp, c.info.App)
		}
		an := egress.AppNet{App: c.info.App, Network: c.info.Network}
		if r.appNets[an]--; r.appNets[an] <= 0 {
			delete(r.appNets, an)
		}
	}
	if n := r.networks[c.info.Network]; n != nil {
		r.release(n, c.addr, c.info.App, c.info.Type, c.info.Number)
	}
}

// list returns the containers ordered by network, then address.
func (r *registry) list() []control.Container {
	out := make([]control.Container, 0, len(r.containers))
	cs := make([]*container, 0, len(r.containers))
	for _, c := range r.containers {
		cs = append(cs, c)
	}
	slices.SortFunc(cs, func(a, b *container) int {
		if c := strings.Compare(a.info.Network, b.info.Network); c != 0 {
			return c
		}
		return a.addr.Compare(b.addr)
	})
	for _, c := range cs {
		out = append(out, c.info)
	}
	return out
}

// newID returns a container id: "c-" and 12 random hex digits.
func newID() string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand never fails on Linux ≥ 3.17; a time-based id keeps us going.
		return fmt.Sprintf("c-%012x", time.Now().UnixNano()&0xffffffffffff)
	}
	return "c-" + hex.EncodeToString(b[:])
}
