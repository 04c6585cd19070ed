package egress

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
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
// eip records runs on the reconcile goroutine (or in Restore before it
// starts), which is what serialises the requests for this gateway's IPs:
// an IP is given only if this gateway does not hold it already.

// ownAssignments returns this node's eip records by IP.
func (a *Assigner) ownAssignments() map[netip.Addr]records.EIP {
	out := make(map[netip.Addr]records.EIP)
	for _, e := range a.store.List(records.EIPPrefix) {
		if e.Owner != a.self {
			continue
		}
		if ip, rec, err := records.ParseEIP(e.Key, e.Value); err == nil {
			out[ip] = rec
		}
	}
	return out
}

// serveRequests answers the enable and disable requests of every node
// for this gateway's IPs. Answers are records: an eip/<ip> put for a
// granted IP, deleted for a released one; a refused IP (held by another
// app, not ours) gets nothing, and the requester sees why from the records.
func (a *Assigner) serveRequests() {
	store := a.store
	self := a.self
	mine := a.ownAssignments()
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
			a.log.Debug("ignoring malformed egress request", "owner", e.Owner, "err", err)
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
			// Saved before announced (AUDIT D12): a crash between the
			// two must not bring back a released IP at restart.
			next := maps.Clone(mine)
			delete(next, ip)
			if err := a.save(next); err != nil {
				continue // retried on the next reconcile
			}
			store.Delete(records.EIPKey(ip))
			delete(mine, ip)
			a.log.Info("released dedicated egress IP", "ip", ip, "app", app, "requested_by", e.Owner)
		}
	}
	for _, en := range enables {
		// A disable of the same app wins until it is done: the two cannot
		// both be meant.
		if disabling[en.app] {
			continue
		}
		for _, p := range en.picks {
			if p.Gateway != self || !slices.Contains(a.ips, p.IP) {
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
				a.log.Error("egress record", "err", err)
				continue
			}
			// Saved before announced (AUDIT D12): an assignment others
			// saw must survive this gateway's crash, or the app's
			// "fixed" IP could change at its restart.
			next := maps.Clone(mine)
			next[p.IP] = rec
			if err := a.save(next); err != nil {
				continue // retried on the next reconcile
			}
			store.Put(records.EIPKey(p.IP), b)
			mine[p.IP] = rec
			a.log.Info("assigned dedicated egress IP", "ip", p.IP, "app", en.app)
		}
	}
}

// selfMeta is the metadata this node advertises now.
func (a *Assigner) selfMeta() cluster.NodeMeta {
	for _, n := range a.members.Nodes() {
		if n.Self {
			return n.Meta
		}
	}
	return cluster.NodeMeta{}
}

func (a *Assigner) filePath() string { return filepath.Join(a.stateDir, fileName) }

// persist writes egress.json when this gateway's assignments or drain
// flag changed since the last write. A failed write is logged once and
// retried on the next reconcile.
func (a *Assigner) persist() { _ = a.save(a.ownAssignments()) }

// save writes egress.json with the assignments own (see persist).
func (a *Assigner) save(own map[netip.Addr]records.EIP) error {
	f := stateFile{Draining: a.selfMeta().Draining, Assignments: []persistedAssignment{}}
	for ip, rec := range own {
		f.Assignments = append(f.Assignments, persistedAssignment{IP: ip, App: rec.App, AssignedAt: rec.AssignedAt})
	}
	slices.SortFunc(f.Assignments, func(a, b persistedAssignment) int { return a.IP.Compare(b.IP) })
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		a.log.Error("encode egress assignments", "err", err)
		return err
	}
	b = append(b, '\n')
	a.fileMu.Lock()
	defer a.fileMu.Unlock()
	if bytes.Equal(b, a.written) {
		return nil
	}
	if err := writeFileAtomic(a.filePath(), b); err != nil {
		if a.written != nil || a.writeErr == "" {
			a.log.Error("cannot save dedicated egress assignments; retrying", "err", err)
		}
		a.written, a.writeErr = nil, err.Error()
		return err
	}
	a.written, a.writeErr = b, ""
	return nil
}

// restore puts back the assignments this gateway saved before its
// restart, and its drain flag. Assignments of IPs that are no longer among
// its --egress-ip are dropped with a warning: the IP cannot be used, and
// the app gets a new one on its next enable.
func (a *Assigner) restore() {
	path := a.filePath()
	f, err := readFile(path)
	if err != nil {
		bad := path + ".bad"
		if rerr := os.Rename(path, bad); rerr != nil {
			bad = ""
		}
		a.log.Error("dedicated egress assignments unreadable; starting without them", "err", err, "moved_to", bad)
		f = stateFile{}
	}
	if !a.isGateway() {
		if len(f.Assignments) > 0 || f.Draining {
			a.log.Warn("this node is no longer a gateway (no --egress-ip): dropping its dedicated egress assignments",
				"assignments", len(f.Assignments))
		}
		if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
			a.log.Warn("remove egress assignments", "err", err)
		}
		return
	}
	store := a.store
	seen := make(map[netip.Addr]bool)
	for _, pa := range f.Assignments {
		switch {
		case !slices.Contains(a.ips, pa.IP):
			a.log.Warn("dropping the dedicated egress assignment of an IP that is no longer an --egress-ip of this node",
				"ip", pa.IP, "app", pa.App)
			continue
		case seen[pa.IP]:
			a.log.Warn("dropping a second assignment of a dedicated egress IP", "ip", pa.IP, "app", pa.App)
			continue
		}
		seen[pa.IP] = true
		b, err := records.EIP{App: pa.App, AssignedAt: pa.AssignedAt}.Encode()
		if err != nil {
			a.log.Error("egress record", "err", err)
			continue
		}
		store.Put(records.EIPKey(pa.IP), b)
		a.log.Info("restored dedicated egress IP", "ip", pa.IP, "app", pa.App)
	}
	if f.Draining {
		if _, err := a.SetDraining(true); err != nil {
			a.log.Error("restore drain", "err", err)
		}
	}
	a.persist()
}

// SetDraining sets this gateway's drain flag in its gossiped metadata
// (idempotent) and saves it, so a gateway drained for maintenance stays
// drained across its restart until undrained.
func (a *Assigner) SetDraining(on bool) (control.GatewayState, error) {
	if !a.isGateway() {
		return control.GatewayState{}, control.Errorf(control.CodeInvalid, "node %s is not a gateway (it has no --egress-ip)", a.self)
	}
	a.drainMu.Lock()
	defer a.drainMu.Unlock()
	// The current metadata, so that only the flag changes.
	meta := a.selfMeta()
	if meta.Draining != on {
		meta.Draining = on
		if err := a.members.SetMeta(meta); err != nil {
			return control.GatewayState{}, fmt.Errorf("set drain flag: %w", err)
		}
		if on {
			a.log.Info("gateway draining: no new dedicated egress flows")
		} else {
			a.log.Info("gateway back in service")
		}
	}
	a.persist()
	a.refreshView()
	out := control.GatewayState{Node: a.self, Draining: on, EgressIPs: []string{}}
	for _, ip := range a.ips {
		out.EgressIPs = append(out.EgressIPs, ip.String())
	}
	return out, nil
}
