package router

import (
	"github.com/vrouter/vrouter/internal/offload"
)

// LocalGSO scratch sizing. A 64 KiB super-packet at an MSS of ~1350 makes
// about 50 segments, so one round of localGSOSegs holds a whole one.
const (
	localGSOSegs = 64
	// localGSOScratches is how many scratches are kept for reuse: a Local
	// writes from a few goroutines at once (gVisor's TCP processors, the
	// link's writer). A channel rather than a sync.Pool, as for the
	// overlay's scratches: the race detector makes a Pool drop items.
	localGSOScratches = 16
	// localGSOMinSeg is the smallest segment buffer made, so that the
	// usual MTUs never make a scratch grow.
	localGSOMinSeg = 1500
)

// localGSOScratch is one WriteLocalGSO call's working memory: the pending
// group of packets for one port, and the buffers super-packets are
// segmented into.
type localGSOScratch struct {
	out   [][]byte // the pending group
	segs  [][]byte // localGSOSegs buffers of seg bytes
	sizes []int
	seg   int // 0 before the first split
}

func (r *Router) getLocalGSOScratch() *localGSOScratch {
	select {
	case s := <-r.localGSOFree:
		return s
	default:
		return &localGSOScratch{out: make([][]byte, 0, localGSOSegs), sizes: make([]int, localGSOSegs)}
	}
}

func (r *Router) putLocalGSOScratch(s *localGSOScratch) {
	clear(s.out[:cap(s.out)])
	s.out = s.out[:0]
	select {
	case r.localGSOFree <- s:
	default:
	}
}

// segments returns the scratch's segment buffers, each of at least size
// bytes, growing them if a larger MTU or offset needs it.
func (s *localGSOScratch) segments(size int) [][]byte {
	if size > s.seg {
		n := max(size, Headroom+localGSOMinSeg)
		slab := make([]byte, localGSOSegs*n)
		s.segs = make([][]byte, localGSOSegs)
		for i := range s.segs {
			s.segs[i] = slab[i*n : (i+1)*n : (i+1)*n]
		}
		s.seg = n
	}
	return s.segs
}

// localGroup is the run of packets WriteLocalGSO has for one port.
type localGroup struct {
	d     *Attached
	gso   bool // written with WriteGSO: every packet has a valid header
	bytes uint64
	used  int // segment buffers the group's packets occupy
}

// WriteLocalGSO is WriteLocal for a Local whose packets may be TCP
// super-packets or lack their checksum: packet i is bufs[i][offset:] with
// its virtio-net header at bufs[i][offset-VirtioHdrLen:offset] (offset ≥
// Headroom; a zero header is a plain packet). A port that is an
// OffloadPort gets them whole (one write of up to 64 KiB instead of
// forty-odd), as long as their segments fit its MTU; every other
// destination (a plain port, a container of another node through the
// overlay) gets them segmented or with the checksum completed. It may
// complete checksums in bufs in place, never keeps the buffers, and may be
// called concurrently.
func (r *Router) WriteLocalGSO(network uint32, bufs [][]byte, offset int) {
	t := r.tableOf(network)
	if t == nil || offset < Headroom {
		r.local.dropped.Add(uint64(len(bufs)))
		return
	}
	r.trackLocal(network, bufs, offset)
	s := r.getLocalGSOScratch()
	var g localGroup
	for _, b := range bufs {
		if offset > len(b) {
			r.local.dropped.Add(1)
			continue
		}
		h := offload.Decode(b[offset-VirtioHdrLen : offset])
		if h.Plain() {
			r.localPlain(t, s, &g, b, offset)
			continue
		}
		gso := h.GSO()
		if gso != offload.GSONone && (gso != offload.GSOTCPv4 || h.GSOSize == 0) {
			r.local.dropped.Add(1) // our stack makes TCPv4 only
			continue
		}
		pkt, _, ok := parseIPv4(b[offset:])
		if !ok {
			r.local.dropped.Add(1)
			continue
		}
		b = b[:offset+len(pkt.hdr)]
		e := lookupDst(t, pkt.hdr)
		if e == nil || (e.kind != entryLocal && e.kind != entryRemote) {
			r.local.dropped.Add(1)
			continue
		}
		if e.kind == entryLocal && e.port.off != nil &&
			(gso == offload.GSONone || offload.SegmentLen(pkt.hdr, h) <= e.port.mtu) {
			r.localAppend(s, &g, e.port, true, b, offset, 0)
			continue
		}
		if gso == offload.GSONone {
			// Checksum only: complete it here, no device will.
			if !offload.CompleteChecksum(pkt.hdr, h) {
				r.local.dropped.Add(1)
				continue
			}
			clear(b[offset-VirtioHdrLen : offset])
			r.localPlain(t, s, &g, b, offset)
			continue
		}
		r.localSplit(t, s, &g, e, pkt.hdr, h, offset)
	}
	r.flushLocal(s, &g, offset)
	r.putLocalGSOScratch(s)
}

// localPlain sends a complete packet the way WriteLocal does: into its
// port's group, or to the overlay at once.
func (r *Router) localPlain(t *table, s *localGSOScratch, g *localGroup, b []byte, offset int) {
	d, sent := r.localDest(t, b[offset:])
	if sent {
		return
	}
	if d == nil {
		r.local.dropped.Add(1)
		return
	}
	r.localAppend(s, g, d, d.off != nil, b, offset, 0)
}

// localAppend adds b to the pending group, writing the group first if it
// is for another port or full. segs is how many segment buffers b takes.
func (r *Router) localAppend(s *localGSOScratch, g *localGroup, d *Attached, gso bool, b []byte, offset, segs int) {
	if g.d != d || g.gso != gso || len(s.out) == cap(s.out) {
		r.flushLocal(s, g, offset)
		g.d, g.gso = d, gso
	}
	s.out = append(s.out, b)
	g.bytes += uint64(len(b) - offset)
	g.used += segs
}

// localSplit segments the super-packet pkt for e (a plain port, a port
// whose MTU is too small for its segments, or a remote container) into
// the scratch's buffers, in rounds when they run out, so that the
// segments keep their order. Segments are cut to the destination's MTU
// if gso_size is too large for it: smaller segments are valid TCP.
func (r *Router) localSplit(t *table, s *localGSOScratch, g *localGroup, e *entry, pkt []byte, h offload.Hdr, offset int) {
	remote := e.kind == entryRemote
	var d *Attached
	var mtu int
	if remote {
		o := r.overlay.Load()
		if o == nil {
			r.local.dropped.Add(1)
			return
		}
		mtu = o.mtu
	} else {
		d, mtu = e.port, e.port.mtu
	}
	hl := offload.SegmentLen(pkt, h) - int(h.GSOSize)
	gsoSize := min(int(h.GSOSize), mtu-hl)
	if gsoSize <= 0 {
		r.local.dropped.Add(1)
		return
	}
	segs := s.segments(offset + hl + gsoSize)
	if remote || (g.d != nil && (g.d != d || g.gso != (d.off != nil))) {
		// Segments for the overlay are sent one by one from the buffers
		// (it copies them); a group for another port goes first.
		r.flushLocal(s, g, offset)
	}
	first := 0
	for {
		if localGSOSegs-g.used < 8 || cap(s.out)-len(s.out) < 8 {
			r.flushLocal(s, g, offset)
		}
		base := g.used
		room := min(localGSOSegs-base, cap(s.out)-len(s.out))
		n, total := offload.SplitTCP(pkt, gsoSize, first, segs[base:base+room], s.sizes[base:base+room], offset)
		if n < 0 {
			r.local.dropped.Add(1)
			return
		}
		for k := range n {
			seg := segs[base+k][:offset+s.sizes[base+k]]
			clear(seg[offset-VirtioHdrLen : offset])
			if !remote {
				r.localAppend(s, g, d, d.off != nil, seg, offset, 1)
			} else if _, sent := r.localDest(t, seg[offset:]); !sent {
				r.local.dropped.Add(1) // no overlay, or a segment above its MTU
			}
		}
		first += n
		if first == total {
			return
		}
	}
}

// flushLocal writes the pending group to its port, with the counters of
// WriteLocal, and empties it.
func (r *Router) flushLocal(s *localGSOScratch, g *localGroup, offset int) {
	if d, out := g.d, s.out; d != nil && len(out) > 0 {
		n := uint64(len(out))
		var err error
		closing := d.closing.Load()
		switch {
		case closing:
			r.local.dropped.Add(n)
		case g.gso:
			_, err = d.off.WriteGSO(out, offset)
		default:
			_, err = d.port.Write(out, offset)
		}
		switch {
		case err != nil:
			r.local.dropped.Add(n)
			r.log.Debug("write from local stack failed", "to", d.cfg.Name, "packets", n, "err", err)
		case !closing:
			r.local.packets.Add(n)
			r.local.bytes.Add(g.bytes)
			d.tx.packets.Add(n)
			d.tx.bytes.Add(g.bytes)
		}
	}
	clear(s.out)
	s.out = s.out[:0]
	*g = localGroup{}
}
