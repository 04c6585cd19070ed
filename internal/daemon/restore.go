package daemon

// Ports that outlive the worker: with a Holder (the supervisor of `vrouter
// run`, or systemd's fd store), every attached port's fd is also held
// outside this process, with the state to rebuild it (supervise.Port). A
// worker that starts after a crash or an upgrade gets them back
// (Config.Restore) and re-attaches each as it was: same id, address,
// number and names, records re-published under this worker's life before
// it joins the cluster.

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/internal/egress"
	"github.com/vrouter/vrouter/internal/ids"
	"github.com/vrouter/vrouter/internal/records"
	"github.com/vrouter/vrouter/internal/supervise"
	"github.com/vrouter/vrouter/router"
)

// PortHolder keeps a dup of each port's fd outside the worker.
type PortHolder interface {
	// Hold keeps a dup of f (f stays the caller's) with p's state.
	Hold(p supervise.Port, f *os.File) error
	// Release closes the held dup of a detached port.
	Release(id string) error
}

// dupFile duplicates f for the holder before OpenPort takes f.
func dupFile(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) { nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("dup: %w", derr)
	}
	return os.NewFile(uintptr(nfd), f.Name()), nil
}

// holdPort hands a freshly attached port to the holder; on failure the
// attach is undone: a port nobody holds would vanish with this worker
// while the engine believes it attached.
func (d *Daemon) holdPort(c *container, port router.Port, f *os.File) error {
	if d.cfg.Holder == nil {
		return nil
	}
	_, vnet := port.(router.OffloadPort)
	d.mu.Lock()
	var vni uint32
	if n := d.reg.networks[c.info.Network]; n != nil {
		vni = n.vni
	}
	d.mu.Unlock()
	if err := d.cfg.Holder.Hold(supervise.Port{Container: c.info, VnetHdr: vnet, VNI: vni}, f); err != nil {
		d.log.Error("attach undone: the supervisor could not hold the port", "id", c.info.ID, "err", err)
		if _, derr := d.detachQuiet(c.info.ID); derr != nil {
			d.log.Warn("undo attach", "id", c.info.ID, "err", derr)
		}
		return fmt.Errorf("attach %s: hand the port to the supervisor: %w", c.info.ID, err)
	}
	return nil
}

// releasePort tells the holder a port is gone.
func (d *Daemon) releasePort(id string) {
	if d.cfg.Holder == nil {
		return
	}
	if err := d.cfg.Holder.Release(id); err != nil {
		d.log.Warn("supervisor: release port", "id", id, "err", err)
	}
}

// restoreQuiet is how long a worker that took over ports drops packets
// for unknown destinations silently (router.HoldUnreachable): long enough
// for the join's full state exchange on a loaded node (seconds), short
// enough that a container asking for a destination that really is gone
// soon gets its error again.
const restoreQuiet = 10 * time.Second

// restore re-attaches the ports a previous worker held. A port that
// cannot be rebuilt is released (its TUN disappears) and reported; it is
// never kept without a worker forwarding for it.
func (d *Daemon) restore(ports []supervise.HeldPort) {
	if len(ports) == 0 {
		return
	}
	// Until every port is back and the join has brought the other nodes'
	// containers, a destination the router does not know yet is most
	// likely one it is about to learn: no ICMP error for it meanwhile.
	d.router.HoldUnreachable(restoreQuiet)
	start := time.Now()
	var restored []egress.Local
	for _, hp := range ports {
		c, err := d.restoreOne(hp)
		if err != nil {
			d.log.Error("port not restored; closed (its TUN disappears), the container must be attached again",
				"id", hp.Port.ID, "network", hp.Port.Network, "ip", hp.Port.IP, "err", err)
			d.obs.restoreFailed.Add(1)
			d.releasePort(hp.Port.ID)
			continue
		}
		restored = append(restored, c.local())
	}
	d.view.Sync()
	d.refreshRemotes()
	d.egress.Path.Reconcile(restored...)
	d.log.Info("ports restored", "restored", len(restored), "failed", len(ports)-len(restored), "took", time.Since(start).Round(time.Microsecond))
}

func (d *Daemon) restoreOne(hp supervise.HeldPort) (*container, error) {
	p := hp.Port
	addr, err := netip.ParseAddr(p.IP)
	if err != nil || !router.IsHost(addr) {
		hp.File.Close()
		return nil, fmt.Errorf("restore %s: bad address %q", p.ID, p.IP)
	}
	if err := errors.Join(ids.Network(p.Network), ids.App(p.App), ids.Type(p.Type)); err != nil || p.ID == "" {
		hp.File.Close()
		return nil, fmt.Errorf("restore %q: bad port state: %v", p.ID, err)
	}
	mtu := p.MTU
	if mtu == 0 {
		mtu = d.cfg.MTU
	}
	port, ifname, err := d.cfg.OpenPort(hp.File, mtu)
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", p.ID, err)
	}
	if _, vnet := port.(router.OffloadPort); vnet != p.VnetHdr {
		port.Close()
		return nil, fmt.Errorf("restore %s: the fd's offload mode (vnet_hdr %v) is not the journalled one (%v)", p.ID, vnet, p.VnetHdr)
	}
	if p.Interface != "" {
		ifname = p.Interface
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.reg.containers[p.ID] != nil || (p.NetnsID != "" && d.reg.byKey[p.NetnsID] != nil) {
		port.Close()
		return nil, fmt.Errorf("restore %s: handed over twice", p.ID)
	}
	if !router.IsNetworkVNI(p.VNI) {
		port.Close()
		return nil, fmt.Errorf("restore %s: no VNI in the port state", p.ID)
	}
	n := d.reg.network(p.Network, p.VNI)
	if n == nil {
		port.Close()
		return nil, fmt.Errorf("restore %s: network %s: its VNI %d is another local network's", p.ID, p.Network, p.VNI)
	}
	addr, number, err := d.reg.reserve(n, addr, p.App, p.Type, p.Number, nil, nil)
	if err != nil {
		d.reg.dropNetworkIfEmpty(n)
		port.Close()
		return nil, fmt.Errorf("restore %s: %w", p.ID, err)
	}
	rec := records.Container{ID: p.ID, App: p.App, Type: p.Type, Number: number, MTU: mtu, Interface: ifname, AttachedAt: p.AttachedAt}
	val, err := rec.Encode()
	if err == nil {
		err = d.ensureStackLocked(n)
	}
	var att *router.Attached
	if err == nil {
		att, err = d.router.AddPort(port, router.PortConfig{Network: n.vni, PN: n.id, Addr: addr, MTU: mtu, Name: p.ID})
	}
	if err != nil {
		d.reg.release(n, addr, p.App, p.Type, number)
		port.Close()
		return nil, fmt.Errorf("restore %s: %w", p.ID, err)
	}
	// The address and number were this node's claims in the previous
	// life; Put (not Claim) re-publishes them under this one. The
	// restored records go out before the join (start), so no peer sees
	// this life without them.
	st := d.cluster.Store()
	d.reg.vnis[p.Network] = n.vni
	st.Put(records.VNIKey(n.vni), []byte(p.Network))
	st.Put(records.NumberKey(p.App, p.Type, number), []byte(p.ID))
	st.Put(records.ContainerKey(p.Network, addr), val)
	info := p.Container
	info.Number = number
	info.MTU = mtu
	info.Interface = ifname
	info.Node = d.cfg.Name
	info.Names = ids.Names(p.Network, p.App, p.Type, number)
	info.Resolver = router.DefaultResolver.String()
	c := &container{addr: addr, key: p.NetnsID, attached: att, info: info}
	d.reg.add(c)
	d.watch(c)
	d.log.Info("restored", "id", p.ID, "network", p.Network, "ip", addr, "interface", ifname)
	return c, nil
}

// Life is what the next worker needs to look like this one to the
// cluster: the bound gossip and WireGuard ports and the peers to rejoin.
func (d *Daemon) Life() supervise.Life {
	l := supervise.Life{GossipPort: d.cluster.LocalAddr().Port()}
	l.BootID, l.Started = d.cluster.Life()
	if p, err := d.wg.ListenPort(); err == nil {
		l.ListenPort = uint16(p)
	}
	for _, n := range d.cluster.Nodes() {
		if !n.Self && n.State == cluster.StateAlive {
			l.Peers = append(l.Peers, n.Addr.String())
			l.PeerNames = append(l.PeerNames, n.Name)
		}
	}
	slices.Sort(l.Peers)
	slices.Sort(l.PeerNames)
	return l
}
