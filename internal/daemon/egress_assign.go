package daemon

// Dedicated egress, control plane: which app holds which gateway IP.
//
// The gateway that has an IP is the authority for it: only it writes
// eip/<ip>, it acts on requests for its own IPs one at a time (in
// reconcileEgress, on the reconcile goroutine), and it keeps its
// assignments in STATE-DIR/egress.json so that they survive its restart
// and the death of whoever asked for them. Any node serves `egress
// enable|disable`: it picks the gateways (chooseEgress), puts a request
// record ereq/<app> and waits until the gateways have answered by writing
// or deleting their eip records (egress_assign_ops.go).

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/ids"
)

// egressState is the daemon's dedicated egress state.
type egressState struct {
	mu        sync.Mutex                      // guards lastKnown; serialises view rebuilds
	lastKnown map[netip.Addr]egressAssignment // see buildEgressView
	view      atomic.Pointer[egressView]      // latest snapshot

	wakeMu sync.Mutex
	wake   chan struct{} // closed (and replaced) after every reconcile: waiters re-check

	fileMu   sync.Mutex // serialises writes of egress.json
	written  []byte     // what egress.json holds now (nil: unknown)
	writeErr string     // the last failed write, logged once

	drainMu sync.Mutex // serialises drain and undrain

	appMu sync.Mutex
	busy  map[string]chan struct{} // apps with an enable or disable in progress here; closed when done
}

func newEgressState() *egressState {
	return &egressState{
		lastKnown: make(map[netip.Addr]egressAssignment),
		wake:      make(chan struct{}),
		busy:      make(map[string]chan struct{}),
	}
}

// egressAssign returns the daemon's dedicated egress state.
func (d *Daemon) egressAssign() *egressState { return d.assign }

func (s *egressState) loadView() *egressView {
	if v := s.view.Load(); v != nil {
		return v
	}
	return emptyEgressView
}

// changed returns a channel closed at the next notify.
func (s *egressState) changed() <-chan struct{} {
	s.wakeMu.Lock()
	defer s.wakeMu.Unlock()
	return s.wake
}

func (s *egressState) notify() {
	s.wakeMu.Lock()
	close(s.wake)
	s.wake = make(chan struct{})
	s.wakeMu.Unlock()
}

// lockApp serialises the enable and disable calls of one app on this node
// (they share the request record ereq/<app>). The caller runs the returned
// unlock.
func (s *egressState) lockApp(ctx context.Context, app string) (unlock func(), err error) {
	for {
		s.appMu.Lock()
		ch, held := s.busy[app]
		if !held {
			ch = make(chan struct{})
			s.busy[app] = ch
			s.appMu.Unlock()
			return func() {
				s.appMu.Lock()
				delete(s.busy, app)
				s.appMu.Unlock()
				close(ch)
			}, nil
		}
		s.appMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (d *Daemon) egressOp(ctx context.Context, req *control.EgressRequest) (any, error) {
	if req == nil {
		return nil, control.Errorf(control.CodeBadRequest, "egress needs a body")
	}
	switch req.Action {
	case control.EgressEnable, control.EgressDisable:
		if req.App == "" {
			return nil, control.Errorf(control.CodeInvalid, "egress %s needs an app", req.Action)
		}
	case control.EgressShow:
	default:
		return nil, control.Errorf(control.CodeInvalid, "unknown egress action %q (want enable, disable or show)", req.Action)
	}
	if req.App != "" {
		if err := ids.App(req.App); err != nil {
			return nil, control.Errorf(control.CodeInvalid, "%v", err)
		}
	}
	switch req.Action {
	case control.EgressEnable:
		return d.egressEnable(ctx, req.App)
	case control.EgressDisable:
		return d.egressDisable(ctx, req.App)
	}
	return d.egressShow(req.App)
}

func (d *Daemon) gatewayOp(req *control.GatewayRequest) (any, error) {
	if req == nil {
		return nil, control.Errorf(control.CodeBadRequest, "gateway needs a body")
	}
	var on bool
	switch req.Action {
	case control.GatewayDrain:
		on = true
	case control.GatewayUndrain:
	default:
		return nil, control.Errorf(control.CodeInvalid, "unknown gateway action %q (want drain or undrain)", req.Action)
	}
	st, err := d.setDraining(on)
	if err != nil {
		return nil, err
	}
	return st, nil
}

// loadEgress restores this gateway's persisted assignments and drain flag
// at start, before the reconcile loop runs.
func (d *Daemon) loadEgress() {
	d.restoreEgress()
	d.refreshEgressView()
}

// reconcileEgress acts on egress requests addressed to this gateway and
// publishes a new snapshot; it runs on every cluster change and every
// second (see reconcile). It never blocks on the network.
func (d *Daemon) reconcileEgress() {
	st := d.egressAssign()
	if d.isGateway() {
		d.serveEgressRequests()
		d.persistEgress()
	}
	d.refreshEgressView()
	st.notify()
}

func (d *Daemon) isGateway() bool { return len(d.cfg.EgressIPs) > 0 }
