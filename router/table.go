package router

import "sync/atomic"

// entryKind says where a destination of the forwarding table lives.
type entryKind uint8

const (
	// entryLocal is a port attached to this router.
	entryLocal entryKind = iota + 1
	// entryRemote is a container on another node. forward encapsulates the
	// packet for that node's overlay address (packet path 2) instead of
	// writing it to a port; the overlay accepts packets from the address
	// only when they come from that node.
	entryRemote
)

// entry is one destination in a network's table. Entries are immutable
// once published: replacing a destination means storing a new entry.
type entry struct {
	kind entryKind
	port *Attached // entryLocal: the destination port
	node [4]byte   // entryRemote: overlay IPv4 address of the owner node
}

// table is the forwarding table of one private network: one slot per
// address of NetworkPrefix, indexed by HostIndex. The packet path only
// loads slots (atomically, no lock); AddPort and Close store them while
// holding Router.state. A port keeps a pointer to its network's table, so
// forwarding never looks a network up in a map and cannot reach another
// network's slots: isolation between PNs is by construction.
//
// A table belongs to the one network that created it (owner: a PN id, or
// the id of an app's egress in a PN): every entry and Local stored in it
// was given for that owner, and one given for another network is refused
// (ErrVNIOwned). Two networks whose VNIs collide therefore never share a
// table; the second one is refused instead of mixed in. The owner never
// changes: a table that empties is dropped, and only then can another
// network take its VNI.
type table struct {
	vni     uint32
	owner   string
	slots   [tableSize]atomic.Pointer[entry]
	ports   int // local ports in this table; guarded by Router.state
	remotes int // remote entries in this table; guarded by Router.state

	// local terminates the network's traffic to the node (see Local); the
	// packet path loads it, SetLocal stores it under Router.state.
	local    atomic.Pointer[localSink]
	hasLocal bool // guarded by Router.state
}

// empty reports whether the table holds no entry and no Local, so that it can be
// dropped from the networks map. Callers hold Router.state.
func (t *table) empty() bool { return t.ports == 0 && t.remotes == 0 && !t.hasLocal }

// lookup returns the entry for the address at offset i, or nil.
func (t *table) lookup(i int) *entry { return t.slots[i].Load() }
