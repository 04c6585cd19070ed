package daemon

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/records"
)

// The gateway's side of dedicated egress. Everything here that writes
// eip records runs on the reconcile goroutine (or in loadEgress before it
// starts), which is what serialises the requests for this gateway's IPs:
// an IP is given only if this gateway does not hold it already.

// ownAssignments returns this node's eip records by IP.
func (d *Daemon) ownAssignments() map[netip.Addr]records.EIP {
	out := make(map[netip.Addr]records.EIP)
	for _, e := range d.cluster.Store().List(records.EIPPrefix) {
		if e.Owner != d.cfg.Name {
			continue
		}
		if ip, rec, err := records.ParseEIP(e.Key, e.Value); err == nil {
			out[ip] = rec
		}
	}
	return out
}

// serveEgressRequests answers the enable and disable requests of every node
// for this gateway's IPs. Answers are records: an eip/<ip> put for a
// granted IP, deleted for a released one; a refused IP (held by another
// app, not ours) gets nothing, and the requester sees why from the records.
func (d *Daemon) serveEgressRequests() {
	store := d.cluster.Store()
	self := d.cfg.Name
	mine := d.ownAssignments()
	serves := func(app string) bool {
		for _, rec := range mine {
			if rec.App == app {
				return true
			}
		}
		return false
	}
	type enable struct {
		app   string
		picks []records.EgressPick
	}
	var enables []enable
	disabling := make(map[string]bool)
	for _, e := range store.List(records.EgressRequestPrefix) {
		app, req, err := records.ParseEgressRequest(e.Key, e.Value)
		if err != nil {
			d.log.Debug("ignoring malformed egress request", "owner", e.Owner, "err", err)
			continue
		}
		if req.Action == records.ActionEnable {
			enables = append(enables, enable{app, req.IPs})
			continue
		}
		disabling[app] = true
		for ip, rec := range mine {
			if rec.App != app {
				continue
			}
			store.Delete(records.EIPKey(ip))
			delete(mine, ip)
			d.log.Info("released dedicated egress IP", "ip", ip, "app", app, "requested_by", e.Owner)
		}
	}
	for _, en := range enables {
		// A disable of the same app wins until it is done: the two cannot
		// both be meant.
		if disabling[en.app] {
			continue
		}
		for _, p := range en.picks {
			if p.Gateway != self || !slices.Contains(d.cfg.EgressIPs, p.IP) {
				continue
			}
			// Held already (by this app: done; by another: refused), or
			// this gateway serves the app through another IP: an app's
			// IPs must be on different gateways.
			if _, held := mine[p.IP]; held || serves(en.app) {
				continue
			}
			rec := records.EIP{App: en.app, AssignedAt: time.Now().UTC()}
			b, err := rec.Encode()
			if err != nil {
				d.log.Error("egress record", "err", err)
				continue
			}
			store.Put(records.EIPKey(p.IP), b)
			mine[p.IP] = rec
			d.log.Info("assigned dedicated egress IP", "ip", p.IP, "app", en.app)
		}
	}
}

// selfMeta is the metadata this node advertises now.
func (d *Daemon) selfMeta() cluster.NodeMeta {
	for _, n := range d.cluster.Nodes() {
		if n.Self {
			return n.Meta
		}
	}
	return cluster.NodeMeta{}
}

func (d *Daemon) egressFilePath() string { return filepath.Join(d.cfg.StateDir, egressFileName) }

// persistEgress writes egress.json when this gateway's assignments or drain
// flag changed since the last write. A failed write is logged once and
// retried on the next reconcile.
func (d *Daemon) persistEgress() {
	st := d.egressAssign()
	f := egressFile{Draining: d.selfMeta().Draining, Assignments: []persistedAssignment{}}
	for ip, rec := range d.ownAssignments() {
		f.Assignments = append(f.Assignments, persistedAssignment{IP: ip, App: rec.App, AssignedAt: rec.AssignedAt})
	}
	slices.SortFunc(f.Assignments, func(a, b persistedAssignment) int { return a.IP.Compare(b.IP) })
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		d.log.Error("encode egress assignments", "err", err)
		return
	}
	b = append(b, '\n')
	st.fileMu.Lock()
	defer st.fileMu.Unlock()
	if bytes.Equal(b, st.written) {
		return
	}
	if err := writeFileAtomic(d.egressFilePath(), b); err != nil {
		if st.written != nil || st.writeErr == "" {
			d.log.Error("cannot save dedicated egress assignments; retrying", "err", err)
		}
		st.written, st.writeErr = nil, err.Error()
		return
	}
	st.written, st.writeErr = b, ""
}

// restoreEgress puts back the assignments this gateway saved before its
// restart, and its drain flag. Assignments of IPs that are no longer among
// its --egress-ip are dropped with a warning: the IP cannot be used, and
// the app gets a new one on its next enable.
func (d *Daemon) restoreEgress() {
	path := d.egressFilePath()
	f, err := readEgressFile(path)
	if err != nil {
		bad := path + ".bad"
		if rerr := os.Rename(path, bad); rerr != nil {
			bad = ""
		}
		d.log.Error("dedicated egress assignments unreadable; starting without them", "err", err, "moved_to", bad)
		f = egressFile{}
	}
	if !d.isGateway() {
		if len(f.Assignments) > 0 || f.Draining {
			d.log.Warn("this node is no longer a gateway (no --egress-ip): dropping its dedicated egress assignments",
				"assignments", len(f.Assignments))
		}
		if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
			d.log.Warn("remove egress assignments", "err", err)
		}
		return
	}
	store := d.cluster.Store()
	seen := make(map[netip.Addr]bool)
	for _, a := range f.Assignments {
		switch {
		case !slices.Contains(d.cfg.EgressIPs, a.IP):
			d.log.Warn("dropping the dedicated egress assignment of an IP that is no longer an --egress-ip of this node",
				"ip", a.IP, "app", a.App)
			continue
		case seen[a.IP]:
			d.log.Warn("dropping a second assignment of a dedicated egress IP", "ip", a.IP, "app", a.App)
			continue
		}
		seen[a.IP] = true
		b, err := records.EIP{App: a.App, AssignedAt: a.AssignedAt}.Encode()
		if err != nil {
			d.log.Error("egress record", "err", err)
			continue
		}
		store.Put(records.EIPKey(a.IP), b)
		d.log.Info("restored dedicated egress IP", "ip", a.IP, "app", a.App)
	}
	if f.Draining {
		if _, err := d.setDraining(true); err != nil {
			d.log.Error("restore drain", "err", err)
		}
	}
	d.persistEgress()
}

// setDraining sets this gateway's drain flag in its gossiped metadata
// (idempotent) and saves it, so a gateway drained for maintenance stays
// drained across its restart until undrained.
func (d *Daemon) setDraining(on bool) (control.GatewayState, error) {
	if !d.isGateway() {
		return control.GatewayState{}, control.Errorf(control.CodeInvalid, "node %s is not a gateway (it has no --egress-ip)", d.cfg.Name)
	}
	st := d.egressAssign()
	st.drainMu.Lock()
	defer st.drainMu.Unlock()
	// The current metadata, so that only the flag changes.
	meta := d.selfMeta()
	if meta.Draining != on {
		meta.Draining = on
		if err := d.cluster.SetMeta(meta); err != nil {
			return control.GatewayState{}, fmt.Errorf("set drain flag: %w", err)
		}
		if on {
			d.log.Info("gateway draining: no new dedicated egress flows")
		} else {
			d.log.Info("gateway back in service")
		}
	}
	d.persistEgress()
	d.refreshEgressView()
	out := control.GatewayState{Node: d.cfg.Name, Draining: on, EgressIPs: []string{}}
	for _, ip := range d.cfg.EgressIPs {
		out.EgressIPs = append(out.EgressIPs, ip.String())
	}
	return out, nil
}
