package cluster

import (
	"net/netip"
	"time"

	"github.com/hashicorp/memberlist"
)

// delegate is the private adapter memberlist calls into. Every method is
// called from memberlist's packet, stream or probe goroutines, some of them
// (the EventDelegate methods) with memberlist's node lock held: they only
// take Cluster.mu / Store.mu for short, never call back into memberlist,
// and never block (change notifications are non-blocking sends).
type delegate struct{ c *Cluster }

var (
	_ memberlist.Delegate         = delegate{}
	_ memberlist.EventDelegate    = delegate{}
	_ memberlist.MergeDelegate    = delegate{}
	_ memberlist.ConflictDelegate = delegate{}
	_ memberlist.PingDelegate     = delegate{}
)

// NodeMeta returns the encoded metadata, which New and SetMeta checked
// against MetaMaxSize, so memberlist's panic on oversized metadata cannot
// trigger.
func (d delegate) NodeMeta(limit int) []byte {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	if len(d.c.metaBytes) > limit {
		return nil
	}
	return append([]byte(nil), d.c.metaBytes...)
}

// NotifyMsg handles a gossiped store message. The decoder copies what it
// keeps: memberlist reuses b after we return.
func (d delegate) NotifyMsg(b []byte) {
	m, err := d.c.store.handleMessage(b, true)
	if err != nil {
		d.c.log.Debug("dropped store message", "err", err, "bytes", len(b))
		return
	}
	if m.typ == msgBye {
		d.c.handleBye(m.owner, m.boot)
	}
}

func (d delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.c.queue.GetBroadcasts(overhead, limit)
}

func (d delegate) LocalState(join bool) []byte { return d.c.store.localState() }

func (d delegate) MergeRemoteState(buf []byte, join bool) {
	if _, err := d.c.store.handleMessage(buf, false); err != nil {
		d.c.log.Debug("dropped push-pull state", "err", err, "bytes", len(buf))
	}
}

func (d delegate) NotifyJoin(n *memberlist.Node) {
	if n.Name == d.c.name {
		return
	}
	d.c.peerUp(n.Name, addrPortOf(n.Addr, n.Port), n.Meta)
}

func (d delegate) NotifyUpdate(n *memberlist.Node) {
	if n.Name == d.c.name {
		return
	}
	d.c.peerUp(n.Name, addrPortOf(n.Addr, n.Port), n.Meta)
}

// NotifyLeave fires for dead and left nodes alike (n.State is stale inside
// callbacks); a bye message from the node tells them apart.
func (d delegate) NotifyLeave(n *memberlist.Node) {
	if n.Name == d.c.name {
		return
	}
	d.c.peerDown(n.Name, addrPortOf(n.Addr, n.Port), n.Meta)
}

// NotifyMerge vets a join-time push-pull, on the joining side and on the
// seed alike, before memberlist merges anything: a remote view that has a
// live node under a name we know live at another address (ourselves
// included) is refused as a whole, so a node reusing a name never joins and
// never injects state. memberlist's Join then fails for that seed.
func (d delegate) NotifyMerge(peers []*memberlist.Node) error {
	c := d.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range peers {
		if p.State == memberlist.StateDead || p.State == memberlist.StateLeft {
			continue
		}
		theirs := addrPortOf(p.Addr, p.Port)
		var ours netip.AddrPort
		if p.Name == c.name {
			ours = c.local
		} else if n := c.nodes[p.Name]; n != nil && n.state.up() {
			ours = n.addr
		} else {
			continue
		}
		if ours == theirs {
			continue
		}
		err := &nameInUseError{name: p.Name, addr: ours}
		if p.Name == c.name && c.joining {
			// We are the newcomer: the name belongs to the node at theirs.
			err.addr = theirs
		}
		if c.joining {
			c.joinConflict = err
		}
		c.log.Warn("refused cluster merge: duplicate node name", "node", p.Name, "ours", ours, "theirs", theirs)
		return err
	}
	return nil
}

// NotifyConflict: memberlist already refuses the newcomer; we only log.
func (d delegate) NotifyConflict(existing, other *memberlist.Node) {
	d.c.log.Warn("node name conflict", "node", existing.Name,
		"known", addrPortOf(existing.Addr, existing.Port), "other", addrPortOf(other.Addr, other.Port))
}

func (d delegate) AckPayload() []byte { return nil }

func (d delegate) NotifyPingComplete(other *memberlist.Node, _ time.Duration, _ []byte) {
	d.c.clearSuspect(other.Name)
}

// broadcast is one store record queued for gossip. Its name is owner+key,
// so a newer version of the same entry replaces a queued older one.
type broadcast struct {
	name string
	msg  []byte
}

var _ memberlist.NamedBroadcast = (*broadcast)(nil)

func (b *broadcast) Invalidates(o memberlist.Broadcast) bool {
	ob, ok := o.(*broadcast)
	return ok && ob.name == b.name
}
func (b *broadcast) Name() string    { return b.name }
func (b *broadcast) Message() []byte { return b.msg }
func (b *broadcast) Finished()       {}
