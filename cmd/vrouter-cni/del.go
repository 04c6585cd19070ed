package main

import (
	"errors"
	"io/fs"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/tunnel"
)

// cmdDel detaches the container's port and removes its interface. It
// succeeds when there is nothing left to remove (the spec's idempotent
// DEL) and when the daemon does not answer: then the deletion is queued
// for the next invocation that reaches it.
func cmdDel(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	d := daemonClient{conf.Control}
	q := queueFor(conf)
	att := attachment(conf, args)
	err = q.apply(d)
	if err == nil {
		err = delPort(d, q, att)
	}
	if err != nil {
		if !unreachable(err) {
			return daemonError(conf.Control, err)
		}
		if qerr := q.add(att); qerr != nil {
			return types.NewError(types.ErrIOFailure, "vrouter-cni: daemon not answering and "+qerr.Error(), err.Error())
		}
	}
	// The interface goes too: with a daemon that is unreachable but alive
	// the TUN would otherwise stay in the namespace until it answers.
	if args.Netns != "" {
		err := tunnel.Remove(args.Netns, args.IfName)
		if err != nil && !errors.Is(err, tunnel.ErrNoInterface) && !errors.Is(err, fs.ErrNotExist) {
			return types.NewError(types.ErrInternal, "vrouter-cni: "+err.Error(), "")
		}
	}
	return nil
}

// delPort detaches the ports of att and drops any queued deletion of it.
func delPort(d daemonClient, q queue, att control.CNIAttachment) error {
	ports, err := d.ports(att.Network)
	if err != nil {
		return err
	}
	if err := detachMatching(d, ports, att); err != nil {
		return err
	}
	return q.forget(att)
}
