package egress

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Assigner is the control plane of dedicated egress on one node: it
// serves enable, disable and show from any node, and on a gateway it
// answers the requests for its own IPs, keeps its assignments across
// restarts and publishes its drain and health flags.
type Assigner struct {
	self      string
	stateDir  string
	ips       []netip.Addr // this gateway's egress IPs; none: a worker
	probe     netip.AddrPort
	members   Members
	store     Store
	log       *slog.Logger
	opTimeout time.Duration
	ctx       context.Context // cancelled by Close: bounds rollbacks of callers gone

	mu        sync.Mutex                // guards lastKnown; serialises view rebuilds
	lastKnown map[netip.Addr]assignment // see buildView
	view      atomic.Pointer[view]      // latest snapshot

	wakeMu sync.Mutex
	wake   chan struct{} // closed (and replaced) after every reconcile: waiters re-check

	fileMu   sync.Mutex // serialises writes of egress.json
	written  []byte     // what egress.json holds now (nil: unknown)
	writeErr string     // the last failed write, logged once

	drainMu sync.Mutex // serialises drain, undrain and health: one writer of the metadata

	appMu sync.Mutex
	busy  map[string]chan struct{} // apps with an enable or disable in progress here; closed when done
}

func newAssigner(ctx context.Context, d Deps) *Assigner {
	timeout := d.OpTimeout
	if timeout == 0 {
		timeout = defaultOpTimeout
	}
	return &Assigner{
		self:      d.Self,
		stateDir:  d.StateDir,
		ips:       slices.Clone(d.IPs),
		probe:     d.Probe,
		members:   d.Members,
		store:     d.Store,
		log:       d.Logger,
		opTimeout: timeout,
		ctx:       ctx,
		lastKnown: make(map[netip.Addr]assignment),
		wake:      make(chan struct{}),
		busy:      make(map[string]chan struct{}),
	}
}

func (a *Assigner) loadView() *view {
	if v := a.view.Load(); v != nil {
		return v
	}
	return emptyView
}

// changed returns a channel closed at the next notify.
func (a *Assigner) changed() <-chan struct{} {
	a.wakeMu.Lock()
	defer a.wakeMu.Unlock()
	return a.wake
}

func (a *Assigner) notify() {
	a.wakeMu.Lock()
	close(a.wake)
	a.wake = make(chan struct{})
	a.wakeMu.Unlock()
}

// lockApp serialises the enable and disable calls of one app on this node
// (they share the request record ereq/<app>). The caller runs the returned
// unlock.
func (a *Assigner) lockApp(ctx context.Context, app string) (unlock func(), err error) {
	for {
		a.appMu.Lock()
		ch, held := a.busy[app]
		if !held {
			ch = make(chan struct{})
			a.busy[app] = ch
			a.appMu.Unlock()
			return func() {
				a.appMu.Lock()
				delete(a.busy, app)
				a.appMu.Unlock()
				close(ch)
			}, nil
		}
		a.appMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Restore puts back this gateway's persisted assignments and drain flag;
// its owner calls it once at start, before the first Reconcile.
func (a *Assigner) Restore() {
	a.restore()
	a.refreshView()
}

// Reconcile acts on egress requests addressed to this gateway and
// publishes a new snapshot; its owner calls it on every cluster change and
// every second, from one goroutine (which is what serialises the requests
// for this gateway's IPs). It never blocks on the network.
func (a *Assigner) Reconcile() {
	if a.isGateway() {
		a.serveRequests()
		a.persist()
	}
	a.refreshView()
	a.notify()
}

func (a *Assigner) isGateway() bool { return len(a.ips) > 0 }
