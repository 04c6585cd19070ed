package daemon

import (
	"errors"
	"maps"
	"net/netip"
	"sync"

	"github.com/vrouter/vrouter/internal/records"
	"github.com/vrouter/vrouter/router"
)

// remoteEntry is the router entry installed for one container record of
// another node.
type remoteEntry struct {
	vni     uint32
	pn      string // owner of vni's table
	addr    netip.Addr
	overlay netip.Addr // of the container's node
}

// remoteState is what reconcileRemotes installed. mu serialises the
// reconcile loop and attach/detach, which refresh the entries of a network
// that just got its first local container or lost its last.
type remoteState struct {
	mu       sync.Mutex
	entries  *records.Follower[remoteEntry] // c/ key → its entry in the router
	overlays map[string]netip.Addr          // of alive nodes, as last applied
	local    map[string]bool                // networks with local containers, as last applied
}

// reconcileRemotes keeps the router's entries for other nodes' containers
// equal to the winning claims of the cluster, for the alive nodes in
// overlays, in the networks that have containers on this node (AUDIT D10:
// a node builds no table for a network it does not serve). It looks at the
// records that changed since its last run, and at all of them when the
// nodes or the local networks changed.
//
// Two networks whose ids hash to one VNI never share entries: the router
// refuses an entry for a VNI whose table another network owns
// (router.ErrVNIOwned), and the refused record is tried again later.
func (d *Daemon) reconcileRemotes(overlays map[string]netip.Addr) {
	rs := &d.remotes
	rs.mu.Lock()
	defer rs.mu.Unlock()
	d.syncRemotesLocked(overlays)
}

// refreshRemotes applies a change of the local networks at once, with the
// nodes as last seen: a network's first container reaches the other nodes'
// containers as soon as its attach returns.
func (d *Daemon) refreshRemotes() {
	rs := &d.remotes
	rs.mu.Lock()
	defer rs.mu.Unlock()
	d.syncRemotesLocked(rs.overlays)
}

func (d *Daemon) syncRemotesLocked(overlays map[string]netip.Addr) {
	rs := &d.remotes
	d.mu.Lock()
	local := make(map[string]bool, len(d.reg.networks))
	for pn := range d.reg.networks {
		local[pn] = true
	}
	d.mu.Unlock()
	full := !maps.Equal(overlays, rs.overlays) || !maps.Equal(local, rs.local)
	rs.overlays, rs.local = overlays, local
	want := func(c records.Claim) (remoteEntry, bool) {
		if c.Owner == d.cfg.Name || !local[c.PN] {
			return remoteEntry{}, false
		}
		ov, alive := overlays[c.Owner]
		return remoteEntry{vni: records.VNI(c.PN), pn: c.PN, addr: c.Addr, overlay: ov}, alive
	}
	rs.entries.Sync(full, want, func(_ string, cur, next *remoteEntry) (*remoteEntry, error) {
		if cur != nil && (next == nil || cur.vni != next.vni || cur.pn != next.pn || cur.addr != next.addr) {
			d.router.RemoveRemote(cur.vni, cur.pn, cur.addr)
			cur = nil
		}
		if next == nil {
			return nil, nil
		}
		if err := d.router.SetRemote(next.vni, next.pn, next.addr, next.overlay); err != nil {
			if errors.Is(err, router.ErrVNIOwned) {
				// Another network has this VNI's table on this node.
				d.log.Error("remote container's network collides with another network's VNI", "vni", next.vni, "pn", next.pn, "addr", next.addr, "err", err)
			} else {
				// A local container holds the address: a claim conflict that
				// the claims should have prevented (e.g. after a partition),
				// or a detach whose port is not gone yet.
				d.log.Error("remote container conflicts with a local one", "vni", next.vni, "addr", next.addr, "err", err)
			}
			return cur, err
		}
		return next, nil
	})
}
