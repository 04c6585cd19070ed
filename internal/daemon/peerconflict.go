package daemon

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/internal/records"
)

// Reasons a peer is left out of the overlay (control.Peer.Conflict).
const (
	conflictWGKey   = "duplicate_wg_key"  // another alive node advertises its WireGuard key
	conflictOverlay = "duplicate_overlay" // another alive node advertises its overlay address
	// conflictNotHeld: the node advertises an overlay address whose claim
	// it does not hold (records.OverlayHolder).
	conflictNotHeld = "overlay_not_held"
)

// peerConflicts returns the alive peers that must stay out of the overlay
// and why: those whose WireGuard public key or overlay address another
// alive node (this one included) also advertises. WireGuard cannot tell
// two peers with one key apart, and gives a shared /32 to whichever came
// last (AUDIT D4), so both offenders are left out and every other peer
// keeps working. A suspect node still counts as a claimant: a probe that
// times out under load must not let its twin back in for a moment (and
// flip every peer's WireGuard config twice). This node itself is never
// left out. holder says which
// node holds the claim of an overlay address: a node advertising one it
// does not hold is left out too (checked on receipt).
func peerConflicts(nodes []cluster.Node, holder func(netip.Addr) (string, bool)) map[string]string {
	byKey := make(map[[32]byte][]string)
	byOverlay := make(map[netip.Addr][]string)
	const selfName = "\x00self"
	for _, n := range nodes {
		if n.Self {
			n.Name = selfName
		} else if n.State != cluster.StateAlive && n.State != cluster.StateSuspect {
			continue
		}
		if n.Meta.WGPublicKey != ([32]byte{}) {
			byKey[n.Meta.WGPublicKey] = append(byKey[n.Meta.WGPublicKey], n.Name)
		}
		if n.Meta.Overlay.IsValid() {
			byOverlay[n.Meta.Overlay] = append(byOverlay[n.Meta.Overlay], n.Name)
		}
	}
	out := make(map[string]string)
	mark := func(names []string, why string) {
		if len(names) < 2 {
			return
		}
		for _, name := range names {
			if name != selfName && out[name] == "" {
				out[name] = why
			}
		}
	}
	for _, names := range byKey {
		mark(names, conflictWGKey)
	}
	for _, names := range byOverlay {
		mark(names, conflictOverlay)
	}
	for _, n := range nodes {
		if n.Self || n.State != cluster.StateAlive || out[n.Name] != "" || !n.Meta.Overlay.IsValid() {
			continue
		}
		if h, ok := holder(n.Meta.Overlay); !ok || h != n.Name {
			out[n.Name] = conflictNotHeld
		}
	}
	return out
}

// setPeerConflicts records the conflicts of this reconcile and logs those
// that are new.
func (d *Daemon) setPeerConflicts(c map[string]string) {
	d.overlayConflicts.Lock()
	old := d.overlayConflicts.peers
	d.overlayConflicts.peers = c
	d.overlayConflicts.Unlock()
	for name, why := range c {
		if old[name] != why {
			d.log.Error("peer left out of the overlay: another node advertises the same identity", "peer", name, "conflict", why)
		}
	}
	for name := range old {
		if _, still := c[name]; !still {
			d.log.Info("peer back in the overlay", "peer", name)
		}
	}
}

func (d *Daemon) peerConflict(name string) string {
	d.overlayConflicts.Lock()
	defer d.overlayConflicts.Unlock()
	return d.overlayConflicts.peers[name]
}

// alarms are the status alarms: peers left out of the overlay and local
// networks whose VNI claim was lost.
func (d *Daemon) alarms() []string {
	var out []string
	d.overlayConflicts.Lock()
	for name, why := range d.overlayConflicts.peers {
		out = append(out, fmt.Sprintf("peer %s left out of the overlay: %s", name, why))
	}
	d.overlayConflicts.Unlock()
	d.remotes.mu.Lock()
	for pn, v := range d.remotes.conflicts {
		out = append(out, fmt.Sprintf("network %s: VNI %d claim lost, cut off from other nodes", pn, v))
	}
	d.remotes.mu.Unlock()
	slices.Sort(out)
	return out
}

// claimOverlay keeps this node's claim of its overlay address (records
// overlay claims) and, when another node won that address first, moves to
// the next free candidate: the router, the claim and the advertised
// metadata follow. It also re-advertises the address when the metadata
// lost it (another writer set older metadata). Called by reconcile.
func (d *Daemon) claimOverlay(nodes []cluster.Node) {
	addr, moved := records.ClaimOverlay(d.cluster.Store(), d.cfg.Name, d.overlayLocal)
	if moved {
		if err := d.router.SetOverlayLocal(addr); err != nil {
			d.log.Error("overlay address lost to another node; cannot move", "addr", d.overlayLocal, "err", err)
			return
		}
		d.log.Warn("overlay address claimed first by another node: moved", "from", d.overlayLocal, "to", addr)
		d.overlayLocal = addr
	}
	for _, n := range nodes {
		if n.Self && n.Meta.Overlay != d.overlayLocal {
			m := n.Meta
			m.Overlay = d.overlayLocal
			if err := d.cluster.SetMeta(m); err != nil {
				d.log.Error("advertise overlay address", "addr", d.overlayLocal, "err", err)
			}
		}
	}
}
