package router

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/vrouter/vrouter/internal/offload"
)

// Overlay sizing.
const (
	// overlayBatch is the tun.Device batch size: wireguard-go's bind batch
	// (conn.IdealBatchSize) on Linux.
	overlayBatch = 128
	// overlayQueueLen bounds the packets waiting for wireguard-go. There
	// are exactly this many overlay buffers, shared fairly by the networks
	// (see overlayqueue.go). A port's read goroutine that finds none within
	// its network's share waits for one, up to overlayWait once per batch:
	// wireguard-go frees them as fast as it encrypts, so the wait is
	// backpressure (the container's TUN queue fills and its TCP slows down
	// without losing a packet; one batch of super-packets is several
	// hundred segments). Only when it waits that long does the sender drop
	// (overlay_fair_share when its network had its share while others were
	// active, else overlay_queue_full), so that a wedged overlay cannot
	// stall the port's local traffic for good.
	overlayQueueLen = 1024
	// overlayScratches is how many Write scratches are kept for reuse:
	// wireguard-go calls Write from one goroutine per peer, and in the
	// steady state a few of them run at once. (A sync.Pool would do, but
	// the race detector makes it drop items, which breaks the alloc test.)
	overlayScratches = 16
)

// overlayWait: see overlayQueueLen (a variable for tests).
var overlayWait = 10 * time.Millisecond

// ErrOverlayEnabled is returned by a second EnableOverlay.
var ErrOverlayEnabled = errors.New("overlay already enabled")

// Overlay is the in-process tun.Device between the router and wireguard-go
// (packet path 2). Outbound, ports' read goroutines encapsulate packets
// for remote destinations into overlay buffers and queue them; wireguard-go's
// single TUN reader drains the queue with Read. Inbound, wireguard-go's
// per-peer receivers call Write concurrently with decrypted VXLAN frames,
// which are checked and written to the destination ports in place, without
// copying: the Port contract forbids keeping the buffers, as does tun.Device.
//
// Ownership: the queue (overlayqueue.go: per-network sub-queues and the
// free list, under its mutex) is shared by the senders (ports' read
// goroutines) and Read; the buffers belong to whoever took them off it.
// Write uses a scratch from a free list, one per call. The counters are
// atomics, folded in once per Write call.
type Overlay struct {
	r     *Router
	local atomic.Uint32 // this node's overlay IPv4 address, big-endian; see SetOverlayLocal
	mtu   int           // inner MTU: the largest packet sent to a remote container

	q      *overlayQueue // encapsulated frames for Read, and the free buffers
	events chan tun.Event

	closing   atomic.Bool
	closed    chan struct{}
	closeOnce sync.Once

	scratch chan *overlayScratch // free scratches for Write
	ctr     counters             // inbound: rx, decapsulation drops and deliveries

	// Frames in wireguard-go (overlay_inflight.go): paced once NewWireGuard
	// counts the bind's sends; inflight is handed minus sent; sent signals
	// Read that some were; inflightTimer is Read's.
	paced         atomic.Bool
	inflight      atomic.Int64
	sent          chan struct{}
	inflightTimer *time.Timer
}

// overlayBuf holds one encapsulated frame at b[Headroom-VXLANOverhead:]:
// the inner packet is copied to b[Headroom:] and the outer headers are
// written in front of it.
type overlayBuf struct {
	b     []byte
	frame []byte
	next  *overlayBuf // in the free list or a sub-queue
}

// overlayScratch is the per-Write state of the inbound path.
type overlayScratch struct {
	dests []*Attached
	sizes []int
	out   [][]byte

	egress egressBatch // packets for gateway NATs (egress.go)
}

// EnableOverlay creates the router's overlay device; local is this node's
// overlay IPv4 address, the outer source of what it sends and the outer
// destination it accepts. Hand the device to wireguard-go (NewWireGuard),
// which closes it; Router.Close closes it too. It can be called once.
//
// The inner MTU of the overlay is DefaultMTU: larger packets to remote
// containers are dropped (too_big) with ICMP fragmentation-needed when DF
// is set. The device's MTU is DefaultMTU+VXLANOverhead.
func (r *Router) EnableOverlay(local netip.Addr) (tun.Device, error) {
	if !local.Is4() {
		return nil, fmt.Errorf("enable overlay: local address %s is not IPv4", local)
	}
	r.state.Lock()
	defer r.state.Unlock()
	if r.state.closed {
		return nil, fmt.Errorf("enable overlay: %w", ErrClosed)
	}
	if r.overlay.Load() != nil {
		return nil, fmt.Errorf("enable overlay %s: %w", local, ErrOverlayEnabled)
	}
	o := newOverlay(r, local.As4(), DefaultMTU)
	r.overlay.Store(o)
	r.log.Debug("overlay enabled", "local", local, "inner_mtu", o.mtu)
	return o, nil
}

func newOverlay(r *Router, local [4]byte, mtu int) *Overlay {
	o := &Overlay{
		r:      r,
		mtu:    mtu,
		q:      newOverlayQueue(Headroom + max(mtu, minBufferMTU)),
		events: make(chan tun.Event, 1),
		closed: make(chan struct{}),
		sent:   make(chan struct{}, 1),

		scratch: make(chan *overlayScratch, overlayScratches),
	}
	o.local.Store(binary.BigEndian.Uint32(local[:]))
	o.events <- tun.EventUp
	return o
}

// localAddr returns this node's overlay address.
func (o *Overlay) localAddr() [4]byte {
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], o.local.Load())
	return a
}

// SetOverlayLocal moves this node to another overlay address (it lost
// its address's claim to another node): frames go out from it and only
// frames to it are accepted from now on.
func (r *Router) SetOverlayLocal(local netip.Addr) error {
	o := r.overlay.Load()
	if o == nil {
		return fmt.Errorf("set overlay address %s: no overlay", local)
	}
	if !local.Is4() {
		return fmt.Errorf("set overlay address %s: not IPv4", local)
	}
	a := local.As4()
	o.local.Store(binary.BigEndian.Uint32(a[:]))
	r.log.Info("overlay address changed", "local", local)
	return nil
}

// getScratch takes a Write scratch off the free list or makes one.
func (o *Overlay) getScratch() *overlayScratch {
	select {
	case s := <-o.scratch:
		return s
	default:
		return &overlayScratch{
			dests: make([]*Attached, overlayBatch),
			sizes: make([]int, overlayBatch),
			out:   make([][]byte, 0, overlayBatch),
		}
	}
}

// putScratch returns s to the free list, or lets it go when the list is
// full. s must hold no packet: dests is cleared as it is consumed.
func (o *Overlay) putScratch(s *overlayScratch) {
	select {
	case o.scratch <- s:
	default:
	}
}

// send encapsulates pkt (a validated IPv4 packet no larger than o.mtu) for
// node and queues it for wireguard-go in vni's sub-queue, counting into
// c. It never blocks (the Locals' writers, probes); sendFrom, from a
// port's read goroutine, may wait for a free buffer (see overlayQueueLen).
func (o *Overlay) send(pkt []byte, vni uint32, node [4]byte, c *batchCounters) {
	o.sendFrom(nil, pkt, vni, node, c)
}

func (o *Overlay) sendFrom(a *Attached, pkt []byte, vni uint32, node [4]byte, c *batchCounters) {
	if o.closing.Load() {
		c[dropWriteError]++
		return
	}
	ob, why := o.q.take(a, vni, o.closed)
	if ob == nil {
		c[why]++
		return
	}
	n := copy(ob.b[Headroom:], pkt)
	ob.frame = ob.b[Headroom-VXLANOverhead : Headroom+n]
	encodeVXLAN(ob.frame, o.localAddr(), node, vni)
	o.q.push(ob, vni)
	c[ctrForwarded]++
	c[ctrForwardedBytes] += uint64(n)
	c[ctrEncapsulated]++
	c[ctrEncapsulatedBytes] += uint64(n)
}

// sendGSO segments the TCP super-packet pkt (from an OffloadPort, virtio
// header h) straight into overlay buffers and queues the segments like
// sendFrom, so that its bytes are copied once on their way to
// wireguard-go's Read instead of twice (into the batch's segment buffers,
// then into overlay buffers). Segments larger than the overlay's inner MTU
// drop the super-packet (too_big); keepsWhole checked that already.
func (o *Overlay) sendGSO(a *Attached, pkt []byte, h offload.Hdr, vni uint32, node [4]byte, c *batchCounters) {
	if o.closing.Load() {
		c[dropWriteError]++
		return
	}
	if h.GSO() != offload.GSOTCPv4 || offload.SegmentLen(pkt, h) > o.mtu {
		c[dropTooBig]++
		return
	}
	local := o.localAddr()
	var out [1][]byte
	var sizes [1]int
	total := 1 // known after the first segment
	for k := 0; k < total; k++ {
		ob, why := o.q.take(a, vni, o.closed)
		if ob == nil {
			c[why] += uint64(total - k) // the rest of the super-packet
			return
		}
		out[0] = ob.b
		var n int
		n, total = offload.SplitTCP(pkt, int(h.GSOSize), k, out[:], sizes[:], Headroom)
		if n != 1 {
			o.q.release1(ob)
			c[dropMalformed] += uint64(max(total-k, 1))
			return
		}
		ob.frame = ob.b[Headroom-VXLANOverhead : Headroom+sizes[0]]
		encodeVXLAN(ob.frame, local, node, vni)
		o.q.push(ob, vni)
		c[ctrForwarded]++
		c[ctrForwardedBytes] += uint64(sizes[0])
		c[ctrEncapsulated]++
		c[ctrEncapsulatedBytes] += uint64(sizes[0])
	}
	c[ctrGSOSplit]++
	c[ctrGSOSegments] += uint64(total)
}

// Read implements tun.Device for wireguard-go's single TUN reader: it
// blocks for one frame, then takes whatever else is queued, up to
// len(bufs), one frame of each network in turn. After Close it returns os.ErrClosed, and never another error
// (any other error makes wireguard-go close the device).
func (o *Overlay) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	q := o.q
	if err := o.waitInflight(); err != nil {
		return 0, err
	}
	for {
		if o.closing.Load() {
			return 0, os.ErrClosed
		}
		q.mu.Lock()
		if q.queued > 0 {
			break
		}
		q.mu.Unlock()
		select {
		case <-o.closed:
			return 0, os.ErrClosed
		case <-q.ready:
		}
	}
	frames := q.pop(min(len(bufs), overlayBatch))
	q.mu.Unlock()
	for i, ob := range frames {
		sizes[i] = copy(bufs[i][offset:], ob.frame)
	}
	n := len(frames)
	q.release(frames)
	if o.paced.Load() {
		o.inflight.Add(int64(n))
	}
	return n, nil
}

// Write implements tun.Device for wireguard-go's per-peer receivers, which
// call it concurrently with decrypted frames at bufs[i][offset:].
// wireguard-go has already checked that each frame's outer source is an
// allowed IP of the sending peer, its overlay /32. Write decodes the
// VXLAN frame, accepts it only if the inner source is a remote container
// of that same node in the VNI's network (else forged_source) and the
// inner destination a local port, and writes the inner packets in place,
// one Port.Write per destination. offset must leave Headroom bytes in
// front of the inner packet (wireguard-go's 16 does).
func (o *Overlay) Write(bufs [][]byte, offset int) (int, error) {
	if o.closing.Load() {
		return 0, os.ErrClosed
	}
	if offset+VXLANOverhead < Headroom {
		return 0, fmt.Errorf("overlay write: offset %d leaves less than %d bytes of headroom", offset, Headroom)
	}
	s := o.getScratch()
	for start := 0; start < len(bufs); start += overlayBatch {
		o.writeBatch(s, bufs[start:min(start+overlayBatch, len(bufs))], offset)
	}
	o.putScratch(s)
	return len(bufs), nil
}

// writeBatch handles up to overlayBatch frames of one Write.
func (o *Overlay) writeBatch(s *overlayScratch, bufs [][]byte, offset int) {
	var c batchCounters
	local := o.localAddr()
	dests := s.dests[:len(bufs)]
	ft := o.r.flows.Load()
	var acc flowAcc
	var now int64
	var heard bool // the overlay probes heard from (probe.go)
	var from [4]byte
	if ft != nil {
		now = o.r.now()
	}
	for i, b := range bufs {
		dests[i] = nil
		c[ctrRxPackets]++
		if offset > len(b) {
			c[dropVXLANMalformed]++
			continue
		}
		f, ok := decodeVXLAN(b[offset:])
		if !ok || f.dst != local {
			c[dropVXLANMalformed]++
			continue
		}
		if f.vni == probeVNI {
			c[ctrRxPackets]-- // not traffic: outside the rx balance
			o.handleProbe(f.src, f.inner)
			continue
		}
		if !heard || f.src != from {
			// wireguard-go hands each Write one peer's frames: once per batch.
			heard, from = true, f.src
			o.r.probe.hear(from, o.r.now())
		}
		c[ctrRxBytes] += uint64(len(f.inner))
		t := o.r.tableOf(f.vni)
		pkt, reason, ok := parseIPv4(f.inner)
		if t == nil {
			if !ok {
				c[dropUnknownVNI]++
				continue
			}
			// Maybe a gateway's answer to one of our containers (path 5).
			d, why := o.r.returnDest(f.vni, f.src, pkt)
			if d == nil {
				c[why]++
				continue
			}
			if pkt.totalLen() > d.mtu {
				c[dropTooBig]++
				continue
			}
			dests[i] = d
			s.sizes[i] = pkt.totalLen()
			if ft != nil {
				ft.track(d.cfg.Network, pkt, now, false, &acc) // a reply to the port's egress flow
			}
			continue
		}
		if !ok {
			c[reason]++
			continue
		}
		// Cryptokey routing for containers: the source must be a container
		// the sending node owns in this network.
		si, in := indexOf(pkt.src)
		if !in {
			c[dropForgedSource]++
			continue
		}
		if se := t.lookup(si); se == nil || se.kind != entryRemote || se.node != f.src {
			c[dropForgedSource]++
			continue
		}
		if isBroadcastOrMulticast(pkt.dst) {
			c[dropBroadcast]++
			continue
		}
		di, in := indexOf(pkt.dst)
		if !in {
			// At a gateway: a worker's container going out through the
			// app's NAT (path 5). Only an egress VNI leads there: a PN's
			// own Local is this node's egress for its own containers, and
			// another node's must not leave from this node's address.
			if !IsEgressVNI(f.vni) {
				c[dropOverlayEgress]++
				continue
			}
			if ls := t.local.Load(); ls != nil && ls.egress {
				s.egress.add(ls, pkt.hdr)
				c[ctrToStack]++
				continue
			}
			c[dropUnknownDestination]++
			continue
		}
		de := t.lookup(di)
		if de == nil || de.kind != entryLocal {
			c[dropUnknownDestination]++
			continue
		}
		if pkt.totalLen() > de.port.mtu {
			// The sender's node checks the same MTU before encapsulating;
			// only a peer with a larger overlay MTU gets here.
			c[dropTooBig]++
			continue
		}
		dests[i] = de.port
		s.sizes[i] = pkt.totalLen()
		if ft != nil {
			ft.track(f.vni, pkt, now, true, &acc)
		}
	}
	acc.flush()
	s.egress.flush()

	inner := offset + VXLANOverhead
	for i := range dests {
		d := dests[i]
		if d == nil {
			continue
		}
		out := s.out[:0]
		var bytes uint64
		for j := i; j < len(dests); j++ {
			if dests[j] == d {
				out = append(out, bufs[j][:inner+s.sizes[j]])
				bytes += uint64(s.sizes[j])
				dests[j] = nil
			}
		}
		o.deliver(d, out, inner, bytes, &c)
	}
	o.ctr.add(&c)
}

// deliver writes one destination's decapsulated packets.
func (o *Overlay) deliver(d *Attached, out [][]byte, offset int, bytes uint64, c *batchCounters) {
	if d.closing.Load() {
		c[dropUnknownDestination] += uint64(len(out))
		return
	}
	if _, err := d.port.Write(out, offset); err != nil {
		c[dropWriteError] += uint64(len(out))
		o.r.log.Debug("overlay write to port failed", "to", d.cfg.Name, "packets", len(out), "err", err)
		return
	}
	c[ctrForwarded] += uint64(len(out))
	c[ctrForwardedBytes] += bytes
	c[ctrDecapsulated] += uint64(len(out))
	d.tx.packets.Add(uint64(len(out)))
	d.tx.bytes.Add(bytes)
}

// BatchSize implements tun.Device.
func (o *Overlay) BatchSize() int { return overlayBatch }

// MTU implements tun.Device: the inner MTU plus the VXLAN overhead.
// wireguard-go uses it only for padding.
func (o *Overlay) MTU() (int, error) { return o.mtu + VXLANOverhead, nil }

// Events implements tun.Device: EventUp once, closed by Close.
func (o *Overlay) Events() <-chan tun.Event { return o.events }

// Name implements tun.Device; wireguard-go never calls it.
func (o *Overlay) Name() (string, error) { return "vrouter-overlay", nil }

// File implements tun.Device; there is no file.
func (o *Overlay) File() *os.File { return nil }

// Close ends Read with os.ErrClosed, closes the events channel (ending
// wireguard-go's event reader) and makes senders drop (write_error). It
// is idempotent.
func (o *Overlay) Close() error {
	o.closeOnce.Do(func() {
		o.closing.Store(true)
		close(o.closed)
		close(o.events)
	})
	return nil
}
