package daemon

// Attach and detach: an attach reserves an address and a number in the
// registry, claims them cluster-wide, then adds the port to the router;
// every failure undoes what the attempt took. watch detaches a container
// whose port died on its own.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/ids"
	"github.com/vrouter/vrouter/internal/records"
	"github.com/vrouter/vrouter/router"
)

// reapStacks closes the stacks of networks a failed attach left empty and
// withdraws their VNI claims.
func (d *Daemon) reapStacks() {
	d.mu.Lock()
	stale := d.staleStacksLocked()
	d.releaseVNIsLocked()
	d.mu.Unlock()
	d.closeStacks(stale)
}

// maxClaimAttempts bounds how often attach picks another address or number
// after losing a concurrent claim to another node.
const maxClaimAttempts = 8

func (d *Daemon) attach(ctx context.Context, req *control.AttachRequest, fd *os.File) (_ any, err error) {
	if fd == nil {
		return nil, control.Errorf(control.CodeBadRequest, "attach needs a TUN file descriptor")
	}
	start := time.Now()
	want, err := req.Validate()
	if err != nil {
		fd.Close()
		return nil, err
	}
	var held *os.File // the holder's copy: OpenPort takes fd
	if d.cfg.Holder != nil {
		if held, err = dupFile(fd); err != nil {
			fd.Close()
			return nil, fmt.Errorf("attach: %w", err)
		}
		defer held.Close()
	}
	port, ifname, err := d.cfg.OpenPort(fd, d.cfg.MTU)
	if err != nil {
		fd.Close()
		return nil, control.Errorf(control.CodeInvalid, "%v", err)
	}
	defer func() {
		if err != nil {
			port.Close()
		}
	}()
	if req.Interface != "" {
		ifname = req.Interface
	}
	for attempt := 1; ; attempt++ {
		c, retry, err := d.tryAttach(ctx, req, want, port, ifname)
		if err == nil {
			if err := d.holdPort(c, port, held); err != nil {
				return nil, err // detached: the port is closed
			}
			d.view.Sync()
			d.refreshRemotes()
			d.egress.Path.Reconcile(c.local())
			d.observeAttach(start)
			return c.info, nil
		}
		d.reapStacks()
		if !retry || attempt == maxClaimAttempts {
			return nil, err
		}
		d.log.Debug("lost a concurrent claim; picking again", "network", req.Network, "attempt", attempt, "err", err)
	}
}

// pendingKey holds a namespace's place in registry.byKey while its claims
// settle, so that a concurrent attach of the same namespace is refused.
var pendingKey = &container{}

// tryAttach reserves an address and a number locally, claims them
// cluster-wide (without holding d.mu: the claim waits for gossip to settle)
// and attaches the port. retry is true when another node won a claim that
// the caller did not pin (--ip/--number).
func (d *Daemon) tryAttach(ctx context.Context, req *control.AttachRequest, want netip.Addr, port router.Port, ifname string) (_ *container, retry bool, err error) {
	vni, err := d.claimVNI(ctx, req.Network)
	if err != nil {
		return nil, false, err
	}
	defer d.claimedVNI(req.Network)
	d.mu.Lock()
	if req.ContainerKey != "" {
		if c := d.reg.byKey[req.ContainerKey]; c != nil {
			d.mu.Unlock()
			if c == pendingKey {
				return nil, false, control.Errorf(control.CodeConflict, "this network namespace is being attached already")
			}
			return nil, false, control.Errorf(control.CodeConflict, "this network namespace is already attached as %s (%s)", c.info.ID, c.info.IP)
		}
	}
	takenAddrs, takenNums := d.view.Claimed(req.Network, req.App, req.Type)
	if want.IsValid() && takenAddrs[want] {
		d.mu.Unlock()
		return nil, false, control.Errorf(control.CodeConflict, "address %s is already in use in network %s (on another node)", want, req.Network)
	}
	if req.Number != 0 && takenNums[req.Number] {
		d.mu.Unlock()
		return nil, false, control.Errorf(control.CodeConflict, "container number %d of %s type %s is already in use (on another node)", req.Number, req.App, req.Type)
	}
	n := d.reg.network(req.Network, vni)
	if n == nil {
		d.mu.Unlock()
		return nil, false, control.Errorf(control.CodeConflict, "network %s: its VNI %d is another local network's (the cluster's VNI claims disagree)", req.Network, vni)
	}
	addr, number, err := d.reg.reserve(n, want, req.App, req.Type, req.Number, takenAddrs, takenNums)
	if err != nil {
		d.reg.dropNetworkIfEmpty(n)
		d.mu.Unlock()
		return nil, false, err
	}
	if req.ContainerKey != "" {
		d.reg.byKey[req.ContainerKey] = pendingKey
	}
	id := newID()
	for d.reg.containers[id] != nil {
		id = newID()
	}
	d.mu.Unlock()

	rec := records.Container{ID: id, App: req.App, Type: req.Type, Number: number, MTU: d.cfg.MTU, Interface: ifname, AttachedAt: time.Now().UTC().Truncate(time.Second)}
	lostAddr, lostNum, err := d.claim(ctx, req.Network, rec, addr)

	d.mu.Lock()
	defer d.mu.Unlock()
	if req.ContainerKey != "" && d.reg.byKey[req.ContainerKey] == pendingKey {
		delete(d.reg.byKey, req.ContainerKey)
	}
	undo := func() { d.reg.release(n, addr, req.App, req.Type, number) }
	switch {
	case err != nil:
		undo()
		return nil, false, fmt.Errorf("claim %s in %s: %w", addr, req.Network, err)
	case lostAddr:
		undo()
		return nil, !want.IsValid(), control.Errorf(control.CodeConflict, "address %s is already in use in network %s (claimed concurrently by another node)", addr, req.Network)
	case lostNum:
		undo()
		return nil, req.Number == 0, control.Errorf(control.CodeConflict, "container number %d of %s type %s is already in use (claimed concurrently by another node)", number, req.App, req.Type)
	}
	if err := d.ensureStackLocked(n); err != nil {
		undo()
		c := &container{addr: addr, info: control.Container{Network: req.Network, App: req.App, Type: req.Type, Number: number}}
		d.release(c)
		return nil, false, fmt.Errorf("attach %s: %w", id, err)
	}
	att, err := d.router.AddPort(port, router.PortConfig{Network: n.vni, PN: n.id, Addr: addr, MTU: d.cfg.MTU, Name: id})
	if err != nil {
		undo()
		c := &container{addr: addr, info: control.Container{Network: req.Network, App: req.App, Type: req.Type, Number: number}}
		d.release(c)
		return nil, false, fmt.Errorf("attach %s: %w", id, err)
	}
	c := &container{
		addr:     addr,
		key:      req.ContainerKey,
		attached: att,
		info: control.Container{
			ID:         id,
			Network:    req.Network,
			App:        req.App,
			Type:       req.Type,
			Number:     number,
			IP:         addr.String(),
			MTU:        d.cfg.MTU,
			Resolver:   router.DefaultResolver.String(),
			Names:      ids.Names(req.Network, req.App, req.Type, number),
			Interface:  ifname,
			Netns:      req.Netns,
			NetnsID:    req.ContainerKey,
			CNI:        req.CNI,
			Node:       d.cfg.Name,
			AttachedAt: rec.AttachedAt,
		},
	}
	d.reg.add(c)
	d.watch(c)
	d.log.Info("attached", "id", id, "network", req.Network, "app", req.App, "type", req.Type, "number", number, "ip", addr, "interface", ifname)
	return c, false, nil
}

func (d *Daemon) detach(id string) (any, error) {
	info, err := d.detachQuiet(id)
	if err == nil {
		d.releasePort(id)
	}
	return info, err
}

// detachQuiet detaches without telling the holder.
func (d *Daemon) detachQuiet(id string) (any, error) {
	d.mu.Lock()
	c := d.reg.containers[id]
	if c == nil {
		d.mu.Unlock()
		return nil, control.Errorf(control.CodeNotFound, "no container %s", id)
	}
	d.reg.remove(c)
	stale := d.staleStacksLocked()
	d.mu.Unlock()
	d.release(c)
	if err := c.attached.Close(); err != nil {
		d.log.Warn("closing port", "id", id, "err", err)
	}
	d.closeStacks(stale)
	d.view.Sync()
	d.refreshRemotes()
	d.log.Info("detached", "id", id, "ip", c.addr)
	return c.info, nil
}

// watch arranges for portEnded to run when c's port ends. It costs no
// goroutine while the port lives (see router.Attached.AfterDone).
func (d *Daemon) watch(c *container) {
	d.watchers.Add(1)
	c.attached.AfterDone(func() {
		defer d.watchers.Done()
		d.portEnded(c)
	})
}

// portEnded forgets a container whose port died without a detach, typically
// because its namespace was deleted and took the TUN with it, so that its
// address and number become free and listings stop showing it.
func (d *Daemon) portEnded(c *container) {
	err := c.attached.Err()
	if err == nil {
		return // closed by detach or shutdown
	}
	d.mu.Lock()
	live := d.reg.containers[c.info.ID] == c
	var stale []*netStack
	if live {
		d.reg.remove(c)
		stale = d.staleStacksLocked()
	}
	d.mu.Unlock()
	if live {
		d.release(c)
		c.attached.Close()
		d.closeStacks(stale)
		d.view.Sync()
		d.refreshRemotes()
		d.releasePort(c.info.ID)
		d.log.Warn("container port died; detached", "id", c.info.ID, "ip", c.addr, "err", err)
	}
}
