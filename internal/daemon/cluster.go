package daemon

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/ids"
	"github.com/vrouter/vrouter/internal/records"
	"github.com/vrouter/vrouter/router"
)

// advertiseAddr picks the address other nodes reach us at when none is
// given: the gossip bind address if it is concrete, else the first global
// unicast IPv4 of the host, else loopback (a one-host cluster).
func advertiseAddr(bind netip.Addr) netip.Addr {
	if bind.IsValid() && !bind.IsUnspecified() {
		return bind
	}
	addrs, _ := hostAddrs()
	for _, ip := range addrs {
		if ip.Is4() && ip.IsGlobalUnicast() {
			return ip
		}
	}
	return netip.AddrFrom4([4]byte{127, 0, 0, 1})
}

// joinLoop joins the seeds, retrying with capped exponential backoff until
// it succeeds or the daemon closes. The node serves its local containers
// all along: a cluster that cannot be reached is a degraded state, not a
// reason to stop.
func (d *Daemon) joinLoop(ctx context.Context, seeds []string) {
	defer d.loops.Done()
	backoff := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		jctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := d.cluster.Join(jctx, seeds)
		cancel()
		if err == nil {
			d.obs.joined.Store(true)
			d.log.Info("joined cluster", "seeds", seeds, "nodes", len(d.cluster.Nodes()))
			return
		}
		switch {
		case errors.Is(err, cluster.ErrKeyMismatch):
			// Retrying cannot fix this: say so loudly, keep serving locally.
			d.log.Error("cannot join cluster", "seeds", seeds, "err", err)
			return
		case errors.Is(err, cluster.ErrNameInUse):
			// Our previous life, at another gossip address, is not yet
			// declared dead (AUDIT D12): it will be, so keep trying.
			d.log.Warn("join refused: the cluster still sees this name's previous life at another address; retrying until it is reaped",
				"seeds", seeds, "attempt", attempt, "retry_in", backoff, "err", err)
		default:
			d.log.Warn("join failed; retrying", "seeds", seeds, "attempt", attempt, "retry_in", backoff, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// claim makes the container's address and number ours cluster-wide. It
// returns lostAddr/lostNum when another node won; the caller then picks
// again. On any failure nothing stays claimed.
func (d *Daemon) claim(ctx context.Context, pn string, rec records.Container, addr netip.Addr) (lostAddr, lostNum bool, err error) {
	st := d.cluster.Store()
	settle := d.cluster.SettleTime()
	val, err := rec.Encode()
	if err != nil {
		return false, false, err
	}
	nk, ak := records.NumberKey(rec.App, rec.Type, rec.Number), records.ContainerKey(pn, addr)
	if err := cluster.CheckEntry(nk, []byte(rec.ID)); err != nil {
		return false, false, err
	}
	won, err := st.Claim(ctx, nk, []byte(rec.ID), settle)
	if err != nil || !won {
		st.Delete(nk)
		return false, !won, err
	}
	won, err = st.Claim(ctx, ak, val, settle)
	if err != nil || !won {
		st.Delete(ak)
		st.Delete(nk)
		return !won, false, err
	}
	return false, false, nil
}

// release withdraws a local container's claims.
func (d *Daemon) release(c *container) {
	st := d.cluster.Store()
	st.Delete(records.ContainerKey(c.info.Network, c.addr))
	st.Delete(records.NumberKey(c.info.App, c.info.Type, c.info.Number))
}

// fence detaches the local containers whose address or number claim the
// store withdrew (keys from Store.Fenced) because an older claim won after
// the fact, when a partition healed (AUDIT D9): the winner keeps the
// address everywhere else, and a loser still answering for it here would
// split its traffic. Detaching releases the other claim too.
func (d *Daemon) fence(keys []string) {
	if len(keys) == 0 {
		return
	}
	lost := make(map[string]bool, len(keys))
	for _, k := range keys {
		lost[k] = true
	}
	d.mu.Lock()
	var fenced []*container
	for _, c := range d.reg.containers {
		if lost[records.ContainerKey(c.info.Network, c.addr)] || lost[records.NumberKey(c.info.App, c.info.Type, c.info.Number)] {
			fenced = append(fenced, c)
		}
	}
	d.mu.Unlock()
	for _, c := range fenced {
		d.log.Error("container lost its address or number to an older claim after a partition healed; detached",
			"id", c.info.ID, "network", c.info.Network, "ip", c.addr, "number", c.info.Number)
		if _, err := d.detach(c.info.ID); err != nil {
			d.log.Warn("detach fenced container", "id", c.info.ID, "err", err)
		}
	}
}

// remoteContainers lists the containers other live nodes announce.
func (d *Daemon) remoteContainers() []control.Container {
	var out []control.Container
	for _, l := range d.view.Others() {
		out = append(out, control.Container{
			ID:         l.ID,
			Network:    l.PN,
			App:        l.App,
			Type:       l.Type,
			Number:     l.Number,
			IP:         l.Addr.String(),
			MTU:        l.MTU,
			Resolver:   router.DefaultResolver.String(),
			Names:      ids.Names(l.PN, l.App, l.Type, l.Number),
			Interface:  l.Interface,
			Node:       l.Owner,
			AttachedAt: l.AttachedAt,
		})
	}
	return out
}

func (d *Daemon) peers() []control.Peer {
	var out []control.Peer
	wg := d.wgStatus()
	for _, n := range d.cluster.Nodes() {
		p := control.Peer{
			Name:    n.Name,
			Address: n.Addr.String(),
			State:   n.State.String(),
			Self:    n.Self,
			Since:   n.Since.UTC().Truncate(time.Second),
		}
		if n.Meta.Overlay.IsValid() {
			p.Overlay = n.Meta.Overlay.String()
		}
		if n.Meta.WGPublicKey != ([32]byte{}) {
			p.PublicKey = keyString(n.Meta.WGPublicKey)
			p.Endpoint = n.Meta.WGEndpoint.String()
		}
		p.Identity = n.Identity.String()
		p.Conflict = d.peerConflict(n.Name)
		if n.Meta.SigningKey != ([32]byte{}) {
			p.SigningKey = keyString(n.Meta.SigningKey)
		}
		p.Draining = n.Meta.Draining
		p.Unhealthy = n.Meta.Unhealthy
		for _, ip := range n.Meta.EgressIPs {
			p.EgressIPs = append(p.EgressIPs, ip.String())
		}
		if st, ok := wg[n.Meta.WGPublicKey]; ok && !st.LastHandshake.IsZero() {
			hs := st.LastHandshake.UTC()
			p.LastHandshake = &hs
		}
		out = append(out, p)
	}
	return out
}

// unpin removes the signing key pinned to a peer's name (vrouter peers
// unpin NAME).
func (d *Daemon) unpin(name string) (any, error) {
	if name == d.cfg.Name {
		return nil, control.Errorf(control.CodeInvalid, "%s is this node: its own key is not pinned", name)
	}
	err := d.cluster.Unpin(name)
	switch {
	case errors.Is(err, cluster.ErrNoPin):
		return nil, control.Errorf(control.CodeNotFound, "no signing key is pinned for %q", name)
	case err != nil:
		return nil, control.Errorf(control.CodeInvalid, "%v", err)
	}
	d.log.Info("signing key pin removed by the operator", "peer", name)
	return nil, nil
}

// clusterCounters names the cluster's counters for status.
func clusterCounters(st cluster.Stats) map[string]uint64 {
	return map[string]uint64{
		"msgs_received":          st.MsgsReceived,
		"msgs_bad_version":       st.MsgsBadVersion,
		"msgs_malformed":         st.MsgsMalformed,
		"records_applied":        st.RecordsApplied,
		"records_duplicate":      st.RecordsDuplicate,
		"records_stale":          st.RecordsStale,
		"records_rejected":       st.RecordsRejected,
		"records_bad_signature":  st.RecordsBadSignature,
		"records_unknown_signer": st.RecordsUnknownSigner,
		"records_bad_claim":      st.RecordsBadClaim,
		"claims_lost":            st.ClaimsLost,
		"meta_errors":            st.MetaErrors,
		"meta_unsigned":          st.MetaUnsigned,
		"meta_key_changed":       st.MetaKeyChanged,
		"meta_stale":             st.MetaStale,
		"gossip_warnings":        st.GossipWarnings,
		"gossip_undecryptable":   st.GossipUndecryptable,
		"gossip_socket_errors":   st.GossipSocketErrors,
	}
}
