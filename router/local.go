package router

import (
	"fmt"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Local terminates the traffic of one network that is addressed to the node
// rather than to a container: the resolver address (packet path 3) and,
// later, destinations outside the network (egress, paths 4 and 5). The
// daemon gives each network one (a gVisor netstack, package stack) with
// SetLocal; packets back go through WriteLocal, or WriteLocalGSO when they
// may be TCP super-packets (local_gso.go).
type Local interface {
	// Deliver takes one IPv4 packet a container of the network sent. It is
	// called on the sender port's read goroutine: it must not block, and
	// pkt is only valid during the call (copy what is kept). It may be
	// called concurrently by several ports and after the Local was removed.
	Deliver(pkt []byte)
}

// Per-port bound on packets handed to the network's Local, so that one
// container's flood costs the stack a bounded amount of work. The rate is
// far above what a well-behaved container sends to its resolver and leaves
// headroom for resolver benchmarks (DESIGN.md, Performance).
const (
	localInterval = 20 * time.Microsecond // 50 000 packets/s sustained
	localBurst    = 4096
)

// LocalOptions say what a Local takes besides the resolver's traffic.
type LocalOptions struct {
	// Egress: packets to destinations outside the network (node egress,
	// packet path 4). Without it they are dropped as outside_network.
	Egress bool
}

// LargeLocal is a Local whose Deliver also takes TCP/IPv4 packets larger
// than the MTU, up to 64 KiB, with complete checksums. The router then
// hands a container's TSO super-packets for node egress over whole instead
// of segmenting them: one packet through the netstack instead of forty.
type LargeLocal interface {
	Local
	TakesLarge() bool
}

// localSink wraps a Local so that a table slot can hold it atomically.
type localSink struct {
	l      Local
	egress bool
	large  bool // l is a LargeLocal that takes them
}

// SetLocal makes l the terminator of network's non-container traffic; nil
// removes it (packets to the resolver are then dropped as resolver). owner
// is the id of the network (a PN, or at a gateway an app's egress in it)
// and must own the VNI's table (ErrVNIOwned otherwise); removing another
// network's Local does nothing. The network's table lives while it has a
// Local, so SetLocal may precede the first AddPort.
//
// In a PN's VNI (IsNetworkVNI) the Local serves the node's own containers
// only. Only in an egress VNI (IsEgressVNI: a gateway's NAT for one app)
// does it take packets for outside the network that other nodes send
// through the overlay.
func (r *Router) SetLocal(network uint32, owner string, l Local, opts LocalOptions) error {
	if network == probeVNI || network > MaxVNI {
		return fmt.Errorf("set local: network %d is not a 24-bit VNI other than 0 (overlay probes)", network)
	}
	r.state.Lock()
	defer r.state.Unlock()
	if l == nil {
		if t := r.state.networks[network]; t != nil && t.owner == owner && t.local.Load() != nil {
			t.local.Store(nil)
			t.hasLocal = false
			r.dropIfEmptyLocked(t)
		}
		return nil
	}
	if r.state.closed {
		return fmt.Errorf("set local: %w", ErrClosed)
	}
	t, err := r.ownedTableLocked(network, owner)
	if err != nil {
		return fmt.Errorf("set local: %w", err)
	}
	ll, ok := l.(LargeLocal)
	t.local.Store(&localSink{l: l, egress: opts.Egress, large: ok && ll.TakesLarge()})
	t.hasLocal = true
	return nil
}

// deliverResolver hands a packet for the resolver to the sender's
// network's Local, if any, within the port's rate.
func (a *Attached) deliverResolver(pkt ipv4Packet, c *batchCounters, now int64) {
	s := a.table.local.Load()
	if s == nil {
		c[dropResolver]++
		return
	}
	if !a.localLimit.allow(now) {
		c[dropStackRateLimited]++
		return
	}
	s.l.Deliver(pkt.hdr)
	c[ctrToStack]++
	a.fairResolver++
}

// deliverEgress hands a packet for outside the network to the network's
// Local if it does egress. Not rate limited here: egress is bulk traffic,
// and the stack bounds the flows and dials each container may hold.
// It reports whether the packet is on its way (for flow accounting; a
// dedicated egress packet counts even if no gateway takes it).
func (a *Attached) deliverEgress(pkt ipv4Packet, c *batchCounters, now int64) bool {
	if er := a.egress.Load(); er != nil {
		a.sendEgress(er, pkt, c, now)
		return true
	}
	s := a.table.local.Load()
	if s == nil || !s.egress {
		c[dropOutsideNetwork]++
		return false
	}
	s.l.Deliver(pkt.hdr)
	c[ctrToStack]++
	return true
}

// localCounters count what Locals send back through WriteLocal. They are
// outside the rx/forwarded/drops balance of Stats, which is about packets
// read from ports.
type localCounters struct {
	packets, bytes atomic.Uint64 // written to a port
	dropped        atomic.Uint64 // no such local container, malformed, or Write failed
}

// WriteLocal writes packets a network's Local produced to the network's
// containers on this node. Packet i is bufs[i][offset:] (offset ≥
// Headroom); its IPv4 destination picks the port. Packets for no local
// port (the container left) or that fail are counted and dropped. It never
// keeps the buffers and may be called concurrently.
func (r *Router) WriteLocal(network uint32, bufs [][]byte, offset int) {
	t := r.tableOf(network)
	r.trackLocal(network, bufs, offset)
	for i := 0; i < len(bufs); {
		var d *Attached
		if t != nil && offset >= Headroom && offset <= len(bufs[i]) {
			var sent bool
			d, sent = r.localDest(t, bufs[i][offset:])
			if sent {
				i++
				continue
			}
		}
		if d == nil {
			r.local.dropped.Add(1)
			i++
			continue
		}
		// Group the run of packets for the same port into one Write.
		j := i + 1
		for j < len(bufs) && offset <= len(bufs[j]) && localPort(t, bufs[j][offset:]) == d {
			j++
		}
		var bytes uint64
		for _, b := range bufs[i:j] {
			bytes += uint64(len(b) - offset)
		}
		if d.closing.Load() {
			r.local.dropped.Add(uint64(j - i))
		} else if _, err := d.port.Write(bufs[i:j], offset); err != nil {
			r.local.dropped.Add(uint64(j - i))
			r.log.Debug("write from local stack failed", "to", d.cfg.Name, "packets", j-i, "err", err)
		} else {
			r.local.packets.Add(uint64(j - i))
			r.local.bytes.Add(bytes)
			d.tx.packets.Add(uint64(j - i))
			d.tx.bytes.Add(bytes)
		}
		i = j
	}
}

// trackLocal adds what a network's Local sends back (DNS answers, egress
// replies) to the flows they answer, when flow logs are on.
func (r *Router) trackLocal(network uint32, bufs [][]byte, offset int) {
	ft := r.flows.Load()
	if ft == nil {
		return
	}
	now := r.now()
	var acc flowAcc
	for _, b := range bufs {
		if offset < 0 || offset > len(b) {
			continue
		}
		if pkt, _, ok := parseIPv4(b[offset:]); ok {
			ft.track(network, pkt, now, false, &acc)
		}
	}
	acc.flush()
}

// localDest returns the local port the packet is for. A packet for a
// container of another node (a gateway's NAT answering a worker's
// container, packet path 5) is encapsulated for that node at once: sent
// is then true.
func (r *Router) localDest(t *table, b []byte) (d *Attached, sent bool) {
	e := lookupDst(t, b)
	if e == nil {
		return nil, false
	}
	switch e.kind {
	case entryLocal:
		return e.port, false
	case entryRemote:
		o := r.overlay.Load()
		pkt, _, ok := parseIPv4(b)
		if o == nil || !ok || pkt.totalLen() > o.mtu {
			return nil, false
		}
		var c batchCounters
		o.send(pkt.hdr, t.vni, e.node, &c)
		if c[ctrEncapsulated] == 1 {
			r.local.packets.Add(1)
			r.local.bytes.Add(uint64(pkt.totalLen()))
		} else {
			r.local.dropped.Add(1)
		}
		return nil, true
	}
	return nil, false
}

// localPort returns the local port the packet is for, or nil.
func localPort(t *table, b []byte) *Attached {
	if e := lookupDst(t, b); e != nil && e.kind == entryLocal {
		return e.port
	}
	return nil
}

func lookupDst(t *table, b []byte) *entry {
	if len(b) < header.IPv4MinimumSize || header.IPVersion(b) != header.IPv4Version {
		return nil
	}
	dst := header.IPv4(b).DestinationAddress().As4()
	idx, ok := indexOf(dst)
	if !ok {
		return nil
	}
	return t.lookup(idx)
}
