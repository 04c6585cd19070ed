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
	local    map[string]uint32              // networks with local containers → VNI, as last applied
	// conflicts are local networks whose VNI the cluster's claims give to
	// another network or whose claims name another VNI (after a
	// partition): they get no remote entries (status alarms).
	conflicts map[string]uint32
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
	st := d.cluster.Store()
	d.mu.Lock()
	d.releaseVNIsLocked()
	local := make(map[string]uint32, len(d.reg.networks))
	conflicts := make(map[string]uint32)
	for pn, n := range d.reg.networks {
		// Remote nodes learn a network's VNI from the claims, as we did
		// at attach; a network the claims now place elsewhere (two sides
		// of a partition chose apart) is cut off from the other nodes
		// rather than let into another network's table.
		if v, ok := records.VNIOf(st, pn); ok && v == n.vni {
			local[pn] = n.vni
		} else {
			conflicts[pn] = n.vni
		}
	}
	d.mu.Unlock()
	for pn, v := range conflicts {
		if _, known := rs.conflicts[pn]; !known {
			claimed, _ := records.VNIOf(st, pn)
			d.log.Error("network's VNI claim lost: its containers here are cut off from other nodes", "pn", pn, "vni", v, "claimed_vni", claimed)
		}
	}
	rs.conflicts = conflicts
	full := !maps.Equal(overlays, rs.overlays) || !maps.Equal(local, rs.local)
	rs.overlays, rs.local = overlays, local
	want := func(c records.Claim) (remoteEntry, bool) {
		vni, served := local[c.PN]
		if c.Owner == d.cfg.Name || !served {
			return remoteEntry{}, false
		}
		ov, alive := overlays[c.Owner]
		return remoteEntry{vni: vni, pn: c.PN, addr: c.Addr, overlay: ov}, alive
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
