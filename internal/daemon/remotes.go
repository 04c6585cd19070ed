package daemon

import (
	"maps"
	"net/netip"

	"github.com/vrouter/vrouter/internal/records"
)

// remoteEntry is the router entry installed for one container record of
// another node.
type remoteEntry struct {
	vni     uint32
	addr    netip.Addr
	overlay netip.Addr // of the container's node
}

// remoteState is what reconcileRemotes installed; owned by reconcileLoop.
type remoteState struct {
	entries  *records.Follower[remoteEntry] // c/ key → its entry in the router
	overlays map[string]netip.Addr          // of alive nodes, as last applied
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
	full := !maps.Equal(overlays, rs.overlays)
	rs.overlays = overlays
	want := func(c records.Claim) (remoteEntry, bool) {
		if c.Owner == d.cfg.Name {
			return remoteEntry{}, false
		}
		ov, alive := overlays[c.Owner]
		return remoteEntry{vni: records.VNI(c.PN), addr: c.Addr, overlay: ov}, alive
	}
	rs.entries.Sync(full, want, func(_ string, cur, next *remoteEntry) (*remoteEntry, error) {
		if next == nil {
			d.router.RemoveRemote(cur.vni, cur.addr)
			return nil, nil
		}
		if err := d.router.SetRemote(next.vni, next.addr, next.overlay); err != nil {
			// A local container holds the address: a claim conflict that
			// the claims should have prevented (e.g. after a partition),
			// or a detach whose port is not gone yet.
			d.log.Error("remote container conflicts with a local one", "vni", next.vni, "addr", next.addr, "err", err)
			return cur, err
		}
		return next, nil
	})
}
