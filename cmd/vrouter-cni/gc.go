package main

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/vrouter/vrouter/internal/control"
)

// cmdGC detaches the ports of this network configuration whose attachment
// the runtime no longer lists as valid (spec 1.1.0).
func cmdGC(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	d := daemonClient{conf.Control}
	if err := queueFor(conf).apply(d); err != nil {
		return daemonError(conf.Control, err)
	}
	valid := make(map[types.GCAttachment]bool, len(conf.ValidAttachments))
	for _, a := range conf.ValidAttachments {
		valid[a] = true
	}
	ports, err := d.ports(conf.Name)
	if err != nil {
		return daemonError(conf.Control, err)
	}
	for _, c := range ports {
		if valid[types.GCAttachment{ContainerID: c.CNI.ContainerID, IfName: c.CNI.IfName}] {
			continue
		}
		if err := d.detach(c.ID); err != nil {
			return daemonError(conf.Control, fmt.Errorf("gc %s (container %s): %w", c.ID, c.CNI.ContainerID, err))
		}
	}
	return nil
}

// cmdStatus reports whether the daemon answers (spec 1.1.0): a plugin
// whose daemon is away cannot add containers.
func cmdStatus(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	d := daemonClient{conf.Control}
	if _, err := d.status(); err != nil {
		if errors.Is(err, control.ErrUntrusted) {
			return daemonError(conf.Control, err) // the configuration, not the daemon
		}
		return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("vrouter-cni: vrouter daemon at %s: %v", conf.Control, err), "")
	}
	_ = queueFor(conf).apply(d) // a good moment to catch up; STATUS is about the daemon
	return nil
}
