package egress

import (
	"context"

	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/ids"
)

// EgressOp answers the control op "egress" (enable, disable, show).
func (a *Assigner) EgressOp(ctx context.Context, req *control.EgressRequest) (any, error) {
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
		return a.Enable(ctx, req.App)
	case control.EgressDisable:
		return a.Disable(ctx, req.App)
	}
	return a.Show(req.App)
}

// GatewayOp answers the control op "gateway" (drain, undrain).
func (a *Assigner) GatewayOp(req *control.GatewayRequest) (any, error) {
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
	st, err := a.SetDraining(on)
	if err != nil {
		return nil, err
	}
	return st, nil
}
