package egress

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/records"
)

// The requester's side of dedicated egress: any node serves `egress
// enable|disable|show`.

// defaultOpTimeout bounds an enable or disable (Deps.OpTimeout): gateways
// answer within a gossip round or two, so this only runs out when one is
// stuck.
const defaultOpTimeout = 10 * time.Second

const (
	// egressRollbackTimeout bounds the release of what a failed enable
	// got.
	egressRollbackTimeout = 5 * time.Second
	// maxEgressAttempts bounds how often enable picks again after a
	// gateway refused an IP that a concurrent enable took first.
	maxEgressAttempts = 4
	// egressRecheck: waiters re-check at least this often (they are also
	// woken after every reconcile).
	egressRecheck = 100 * time.Millisecond
)

// inputs reads the cluster's gateways and live assignments now.
func (a *Assigner) inputs() ([]cluster.Node, []gatewayCandidate, []assignment) {
	nodes := a.members.Nodes()
	contested := contestedEgressIPs(nodes)
	var gws []gatewayCandidate
	for _, n := range nodes {
		if !n.Meta.Gateway || len(n.Meta.EgressIPs) == 0 || n.Identity != cluster.IdentityOK {
			continue
		}
		// A contested IP is nobody's to hand out.
		ips := slices.DeleteFunc(slices.Clone(n.Meta.EgressIPs), func(ip netip.Addr) bool { return contested[ip] })
		if len(ips) == 0 {
			continue
		}
		gws = append(gws, gatewayCandidate{
			Name:     n.Name,
			Alive:    n.State == cluster.StateAlive,
			Draining: n.Meta.Draining,
			IPs:      ips,
		})
	}
	return nodes, gws, liveAssignments(nodes, a.store.List(records.EIPPrefix))
}

// Enable gives app its IPs (or returns those it has). If it fails
// after some gateway granted an IP to an app that had none, the grants are
// released again: a failed enable leaves nothing behind.
func (a *Assigner) Enable(ctx context.Context, app string) (any, error) {
	unlock, err := a.lockApp(ctx, app)
	if err != nil {
		return nil, fmt.Errorf("enable egress of %s: %w", app, err)
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(ctx, a.opTimeout)
	defer cancel()
	hadAny, granted := false, false
	for attempt := 1; ; attempt++ {
		_, gws, assigned := a.inputs()
		have, picks, err := chooseEgress(app, gws, assigned)
		if attempt == 1 {
			hadAny = len(have) > 0
		}
		if err == nil && len(picks) == 0 {
			if granted {
				a.log.Info("dedicated egress enabled", "app", app, "ips", len(have))
			}
			return a.row(app, have), nil
		}
		if err == nil && attempt > maxEgressAttempts {
			err = control.Errorf(control.CodeConflict,
				"could not assign dedicated egress to %s: concurrent enables took the chosen IPs %d times; try again", app, maxEgressAttempts)
		}
		if err == nil {
			var n int
			n, err = a.askGateways(ctx, app, picks)
			granted = granted || n > 0
			if err == nil {
				if n < len(picks) {
					a.log.Debug("egress IPs refused (taken concurrently); picking again", "app", app, "attempt", attempt)
				}
				continue // re-read: every pick is granted or refused
			}
		}
		if granted && !hadAny {
			a.rollback(app)
		}
		return nil, err
	}
}

// askGateways puts the request for picks and waits until each named gateway
// has answered. It returns how many picks the app now holds.
func (a *Assigner) askGateways(ctx context.Context, app string, picks []records.EgressPick) (int, error) {
	req := records.EgressRequest{Action: records.ActionEnable, ID: newRequestID(), IPs: picks}
	if err := a.putRequest(app, req); err != nil {
		return 0, err
	}
	defer a.store.Delete(records.EgressRequestKey(app))
	granted := 0
	var pending []records.EgressPick
	err := a.wait(ctx, func() bool {
		nodes, _, assigned := a.inputs()
		granted, pending = 0, pending[:0]
		for _, p := range picks {
			switch pickState(p, app, nodes, assigned) {
			case pickGranted:
				granted++
			case pickPending:
				pending = append(pending, p)
			}
		}
		return len(pending) == 0
	})
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && len(pending) > 0 {
			return granted, control.Errorf(control.CodeUnavailable,
				"gateway %s did not confirm egress IP %s for %s in time", pending[0].Gateway, pending[0].IP, app)
		}
		return granted, fmt.Errorf("enable egress of %s: %w", app, err)
	}
	return granted, nil
}

type pickResult int

const (
	pickPending pickResult = iota
	pickGranted
	pickRefused
)

// pickState tells what became of one pick: granted when its gateway now
// serves the app (through that IP, or another one a concurrent enable of
// the same app got), refused when the IP went to another app or the
// gateway is no longer alive.
func pickState(p records.EgressPick, app string, nodes []cluster.Node, assigned []assignment) pickResult {
	for _, a := range assigned {
		if a.Gateway == p.Gateway && a.App == app {
			return pickGranted
		}
	}
	alive := false
	for _, n := range nodes {
		if n.Name == p.Gateway {
			alive = n.State == cluster.StateAlive
		}
	}
	if !alive {
		return pickRefused
	}
	for _, a := range assigned {
		if a.IP == p.IP {
			return pickRefused
		}
	}
	return pickPending
}

// rollback releases what a failed enable got, bounded in time and
// independent of the caller, who may be gone.
func (a *Assigner) rollback(app string) {
	ctx, cancel := context.WithTimeout(a.ctx, egressRollbackTimeout)
	defer cancel()
	if err := a.release(ctx, app); err != nil {
		a.log.Warn("could not release the IPs of a failed dedicated egress enable", "app", app, "err", err)
	}
}

func (a *Assigner) Disable(ctx context.Context, app string) (any, error) {
	unlock, err := a.lockApp(ctx, app)
	if err != nil {
		return nil, fmt.Errorf("disable egress of %s: %w", app, err)
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(ctx, a.opTimeout)
	defer cancel()
	_, _, assigned := a.inputs()
	var have []assignment
	for _, as := range assigned {
		if as.App == app {
			have = append(have, as)
		}
	}
	if len(have) == 0 {
		return nil, control.Errorf(control.CodeNotFound, "app %s has no dedicated egress", app)
	}
	row := a.row(app, have)
	if err := a.release(ctx, app); err != nil {
		return nil, err
	}
	a.mu.Lock()
	for ip, as := range a.lastKnown {
		if as.App == app {
			delete(a.lastKnown, ip)
		}
	}
	a.mu.Unlock()
	a.refreshView()
	a.log.Info("dedicated egress disabled", "app", app, "ips", len(have))
	return row, nil
}

// release asks every gateway to release app's IPs and waits until no
// live gateway holds one.
func (a *Assigner) release(ctx context.Context, app string) error {
	if err := a.putRequest(app, records.EgressRequest{Action: records.ActionDisable, ID: newRequestID()}); err != nil {
		return err
	}
	defer a.store.Delete(records.EgressRequestKey(app))
	var holders []string
	err := a.wait(ctx, func() bool {
		_, _, assigned := a.inputs()
		holders = holders[:0]
		for _, as := range assigned {
			if as.App == app {
				holders = append(holders, as.Gateway)
			}
		}
		return len(holders) == 0
	})
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && len(holders) > 0 {
			return control.Errorf(control.CodeUnavailable,
				"gateway %s did not release the egress IP of %s in time", holders[0], app)
		}
		return fmt.Errorf("disable egress of %s: %w", app, err)
	}
	return nil
}

func (a *Assigner) putRequest(app string, req records.EgressRequest) error {
	b, err := req.Encode()
	if err != nil {
		return err
	}
	if err := cluster.CheckEntry(records.EgressRequestKey(app), b); err != nil {
		return fmt.Errorf("egress request: %w", err)
	}
	a.store.Put(records.EgressRequestKey(app), b)
	return nil
}

// wait re-checks done after every reconcile (and every
// egressRecheck) until it holds or ctx ends.
func (a *Assigner) wait(ctx context.Context, done func() bool) error {
	t := time.NewTicker(egressRecheck)
	defer t.Stop()
	for {
		wake := a.changed()
		if done() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
		case <-t.C:
		}
	}
}

// row returns app's row of a fresh snapshot; have (the app's live
// assignments) stands in if the snapshot lost them meanwhile.
func (a *Assigner) row(app string, have []assignment) control.EgressApp {
	for _, r := range a.refreshView().rows {
		if r.App == app {
			return r
		}
	}
	row := control.EgressApp{App: app, IPs: []control.EgressIP{}}
	for i, as := range have {
		row.IPs = append(row.IPs, control.EgressIP{IP: as.IP.String(), Gateway: as.Gateway, Health: control.HealthDead, Primary: i == 0})
	}
	return row
}

func (a *Assigner) Show(app string) (any, error) {
	rows := a.refreshView().rows
	if app == "" {
		if rows == nil {
			rows = []control.EgressApp{}
		}
		return rows, nil
	}
	for _, r := range rows {
		if r.App == app {
			return []control.EgressApp{r}, nil
		}
	}
	return nil, control.Errorf(control.CodeNotFound, "app %s has no dedicated egress", app)
}

func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
