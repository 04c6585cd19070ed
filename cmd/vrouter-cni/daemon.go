package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/vrouter/vrouter/internal/control"
)

// callTimeout bounds one request to the daemon. A runtime waits for the
// plugin; a daemon that takes longer than this is stuck, not busy.
const callTimeout = 20 * time.Second

// daemonClient talks to the vrouter daemon of one network configuration.
type daemonClient struct{ sock string }

func (d daemonClient) call(req *control.Request, f *os.File, result any) error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := control.Call(ctx, d.sock, req, f, result); err != nil {
		if errors.Is(err, control.ErrNoDaemon) || errors.Is(err, control.ErrUntrusted) {
			return err // already names the socket
		}
		return fmt.Errorf("vrouter %s: %w", req.Op, err)
	}
	return nil
}

func (d daemonClient) status() (control.Status, error) {
	var st control.Status
	err := d.call(&control.Request{Op: control.OpStatus}, nil, &st)
	return st, err
}

func (d daemonClient) attach(req control.AttachRequest, f *os.File) (control.Container, error) {
	var c control.Container
	err := d.call(&control.Request{Op: control.OpAttach, Attach: &req}, f, &c)
	return c, err
}

// detach removes a port; one the daemon no longer has counts as removed.
func (d daemonClient) detach(id string) error {
	err := d.call(&control.Request{Op: control.OpDetach, Detach: &control.DetachRequest{ID: id}}, nil, nil)
	var ce *control.Error
	if errors.As(err, &ce) && ce.Code == control.CodeNotFound {
		return nil
	}
	return err
}

// ports lists this node's ports that a CNI plugin attached under the
// network configuration name (all of them when name is empty).
func (d daemonClient) ports(name string) ([]control.Container, error) {
	var all []control.Container
	if err := d.call(&control.Request{Op: control.OpContainers}, nil, &all); err != nil {
		return nil, err
	}
	var out []control.Container
	for _, c := range all {
		if c.CNI != nil && (name == "" || c.CNI.Network == name) {
			out = append(out, c)
		}
	}
	return out, nil
}

// unreachable tells whether err means that no daemon answered, as opposed
// to a daemon that answered with a refusal, or a socket the plugin refused
// to use (a DEL must not queue and succeed against a socket that is not
// the daemon's: the configuration is wrong, not the daemon away).
func unreachable(err error) bool {
	var ce *control.Error
	return err != nil && !errors.As(err, &ce) && !errors.Is(err, control.ErrUntrusted)
}

// daemonError turns a daemon's refusal into a CNI error with a code a
// runtime can act on.
func daemonError(sock string, err error) error {
	if errors.Is(err, control.ErrUntrusted) {
		return types.NewError(types.ErrInvalidNetworkConfig, "vrouter-cni: refusing \"control\": "+err.Error(), "")
	}
	var ce *control.Error
	if !errors.As(err, &ce) {
		return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("vrouter-cni: vrouter daemon at %s: %v", sock, err), "")
	}
	code := uint(types.ErrInternal)
	switch ce.Code {
	case control.CodeInvalid, control.CodeBadRequest:
		code = types.ErrInvalidNetworkConfig
	case control.CodeConflict:
		code = codeConflict
	case control.CodeFull:
		code = codeFull
	}
	return types.NewError(code, "vrouter-cni: "+err.Error(), "")
}
