package daemon

import (
	"context"

	"github.com/vrouter/vrouter/internal/control"
)

// Placeholder for dedicated egress assignments (issue 5); being written.

func (d *Daemon) egressOp(ctx context.Context, req *control.EgressRequest) (any, error) {
	return nil, &control.Error{Code: "unavailable", Message: "dedicated egress is not built yet"}
}

func (d *Daemon) gatewayOp(req *control.GatewayRequest) (any, error) {
	return nil, &control.Error{Code: "unavailable", Message: "gateway drain is not built yet"}
}

// loadEgress restores this gateway's persisted assignments at start.
func (d *Daemon) loadEgress() {}

// reconcileEgress acts on egress requests addressed to this gateway; it
// runs on every cluster change (see reconcile).
func (d *Daemon) reconcileEgress() {}
