package router

import (
	"fmt"
	"net/netip"
)

// SetRemote records that addr in network is a container of the node whose
// overlay IPv4 address is node: packets to addr are encapsulated for that
// node, and packets from addr are accepted from the overlay only when they
// come from that node. owner is the id of the network the entry is for (the
// container's PN, or at a gateway the app's egress in it); the VNI's table
// must be that network's (ErrVNIOwned otherwise). It replaces an existing
// remote entry for addr and fails with ErrAddrInUse when a local port
// holds addr.
func (r *Router) SetRemote(network uint32, owner string, addr netip.Addr, node netip.Addr) error {
	if network == probeVNI || network > MaxVNI {
		return fmt.Errorf("set remote %s: network %d is not a 24-bit VNI other than 0 (overlay probes)", addr, network)
	}
	idx, ok := HostIndex(addr)
	if !ok {
		return fmt.Errorf("set remote %s: not a host address of %s", addr, NetworkPrefix)
	}
	if !node.Is4() {
		return fmt.Errorf("set remote %s: node overlay address %s is not IPv4", addr, node)
	}
	e := &entry{kind: entryRemote, node: node.As4()}

	r.state.Lock()
	defer r.state.Unlock()
	if r.state.closed {
		return fmt.Errorf("set remote %s: %w", addr, ErrClosed)
	}
	t, err := r.ownedTableLocked(network, owner)
	if err != nil {
		return fmt.Errorf("set remote %s: %w", addr, err)
	}
	old := t.lookup(idx)
	if old != nil && old.kind != entryRemote {
		return fmt.Errorf("set remote %s in network %d: %w", addr, network, ErrAddrInUse)
	}
	t.slots[idx].Store(e)
	if old == nil {
		t.remotes++
	}
	return nil
}

// RemoveRemote deletes owner's remote entry for addr in network. It does
// nothing when there is none, when addr is a local port or when the table
// belongs to another network.
func (r *Router) RemoveRemote(network uint32, owner string, addr netip.Addr) {
	idx, ok := HostIndex(addr)
	if !ok {
		return
	}
	r.state.Lock()
	defer r.state.Unlock()
	t := r.state.networks[network]
	if t == nil || t.owner != owner {
		return
	}
	old := t.lookup(idx)
	if old == nil || old.kind != entryRemote {
		return
	}
	t.slots[idx].Store(nil)
	t.remotes--
	r.dropIfEmptyLocked(t)
}
