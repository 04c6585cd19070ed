package daemon

import (
	"maps"
	"net/netip"
)

// remoteKey is one container of another node in the router's table.
type remoteKey struct {
	vni  uint32
	addr netip.Addr
}

// remoteEntry is the router entry installed for one container record.
type remoteEntry struct {
	rk      remoteKey
	overlay netip.Addr // of the container's node
}

// remoteState is what reconcileRemotes installed; owned by reconcileLoop.
type remoteState struct {
	entries  map[string]remoteEntry // c/ key → its entry in the router
	retry    map[string]bool        // keys whose entry the router refused: tried again next time
	cursor   uint64                 // in the store's journal (containerView.changes)
	overlays map[string]netip.Addr  // of alive nodes, as last applied
}

func newRemoteState() remoteState {
	return remoteState{entries: make(map[string]remoteEntry), retry: make(map[string]bool)}
}

// reconcileRemotes keeps the router's entries for other nodes' containers
// equal to the winning claims of the cluster, for the alive nodes in
// overlays. It looks at the records that changed since its last run, and
// at all of them when the nodes changed.
//
// Two networks whose ids hash to one VNI would share entries; the
// registry refuses such a pair locally, and across nodes they are as
// unlikely as the collision itself.
func (d *Daemon) reconcileRemotes(overlays map[string]netip.Addr) {
	rs := &d.remotes
	keys, all := d.view.changes(&rs.cursor)
	if all || !maps.Equal(overlays, rs.overlays) {
		keys = d.view.keys()
		for k := range rs.entries {
			keys = append(keys, k)
		}
	}
	rs.overlays = overlays
	for k := range rs.retry {
		keys = append(keys, k)
	}
	for _, w := range d.view.lookup(keys) {
		cur, had := rs.entries[w.key]
		var want remoteEntry
		wanted := false
		if w.ok && w.e.owner != d.cfg.Name {
			if ov, alive := overlays[w.e.owner]; alive {
				want, wanted = remoteEntry{rk: remoteKey{VNI(w.e.pn), w.e.addr}, overlay: ov}, true
			}
		}
		switch {
		case !wanted:
			if had {
				d.router.RemoveRemote(cur.rk.vni, cur.rk.addr)
				delete(rs.entries, w.key)
			}
			delete(rs.retry, w.key)
		case had && cur == want:
			delete(rs.retry, w.key)
		default:
			if err := d.router.SetRemote(want.rk.vni, want.rk.addr, want.overlay); err != nil {
				// A local container holds the address: a claim conflict that
				// the claims should have prevented (e.g. after a partition),
				// or a detach whose port is not gone yet.
				d.log.Error("remote container conflicts with a local one", "vni", want.rk.vni, "addr", want.rk.addr, "err", err)
				rs.retry[w.key] = true
				continue
			}
			rs.entries[w.key] = want
			delete(rs.retry, w.key)
		}
	}
}
