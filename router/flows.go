package router

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Flow accounting for flow logs (--flow-log).
//
// A FlowTable is a fixed array of slots that the packet path updates with
// atomics: no lock, no allocation, bounded memory. A flow is the 5-tuple
// plus the network's VNI; both directions share one slot, found by a hash
// that is the same for a packet and its reply. The direction that created
// the slot is the flow's "out" direction (its initiator is the source).
//
// Slot life: empty → claiming (the creator writes the key) → live (the
// packet path adds to it) → retiring (Sweep took it out of lookups) →
// empty. Sweep reads and frees a retiring slot only at a later call and
// flowGrace after it retired, so that a packet path that matched the slot
// before it retired has long finished adding to it: no count is lost to,
// or mixed with, a later flow (unless that goroutine stalled for longer
// than flowGrace between its lookup and its adds). Sweep runs on one
// goroutine (the flow logger's), never on the packet path.
//
// Lookups scan a window of flowProbe slots from the hash and do not stop
// at an empty one, so freeing a slot never breaks another flow's chain.
// A new flow takes the first empty slot of its window; when the window is
// full the flow is not tracked and Dropped counts it. Two first packets of
// one flow racing from both ends can make two slots (two records of one
// flow); for TCP this cannot happen, as the SYN is tracked before it is
// written to the other end.

// flowGrace is how long a retired slot waits before Sweep reads it.
const flowGrace = int64(200 * time.Millisecond)

// flowProbe is the window a flow may occupy: a lookup reads at most this
// many slots.
const flowProbe = 16

const (
	slotEmpty uint32 = iota
	slotClaiming
	slotLive
	slotRetiring
)

// TCP flags seen, per direction.
const (
	flowFinOut uint32 = 1 << iota
	flowFinIn
	flowRst
)

type flowSlot struct {
	state   atomic.Uint32
	k0, k1  atomic.Uint64 // flowKey as created: out direction
	first   atomic.Int64  // router clock of the first packet
	last    atomic.Int64  // of the last one
	retired atomic.Int64  // router clock when Sweep retired it
	flags   atomic.Uint32
	pkts    [2]atomic.Uint64 // [0] out, [1] in
	bytes   [2]atomic.Uint64 // IP bytes
	data    [2]atomic.Uint64 // TCP/UDP payload bytes
}

// FlowTable holds the flows of one router. Create it with NewFlowTable
// and hand it to Router.EnableFlows.
type FlowTable struct {
	slots   []flowSlot
	mask    uint64
	epoch   time.Time // the router's clock origin, set by EnableFlows
	dropped atomic.Uint64
	created atomic.Uint64
	live    atomic.Int64
	grace   int64 // flowGrace; tests without concurrent trackers set 0
}

// NewFlowTable returns a table of at least size slots (rounded up to a
// power of two, at least flowProbe). Each slot is 128 bytes.
func NewFlowTable(size int) *FlowTable {
	n := flowProbe
	for n < size {
		n *= 2
	}
	return &FlowTable{slots: make([]flowSlot, n), mask: uint64(n - 1), grace: flowGrace}
}

// Cap is the number of slots.
func (t *FlowTable) Cap() int { return len(t.slots) }

// FlowTableStats are a table's counters.
type FlowTableStats struct {
	Created uint64 // flows tracked
	Dropped uint64 // new flows not tracked: their window was full
	Live    int    // flows in the table now
}

// Stats returns the table's counters.
func (t *FlowTable) Stats() FlowTableStats {
	return FlowTableStats{Created: t.created.Load(), Dropped: t.dropped.Load(), Live: int(t.live.Load())}
}

// flowTuple is a packet's flow identity in the direction it travels.
type flowTuple struct {
	vni          uint32
	proto        uint8
	src, dst     [4]byte
	sport, dport uint16
}

func (f *flowTuple) keys() (k0, k1 uint64) {
	k0 = uint64(binary.BigEndian.Uint32(f.src[:]))<<32 | uint64(binary.BigEndian.Uint32(f.dst[:]))
	k1 = uint64(f.vni)<<40 | uint64(f.proto)<<32 | uint64(f.sport)<<16 | uint64(f.dport)
	return
}

func (f *flowTuple) reversed() flowTuple {
	return flowTuple{vni: f.vni, proto: f.proto, src: f.dst, dst: f.src, sport: f.dport, dport: f.sport}
}

// hash is the same for both directions of a flow.
func (f *flowTuple) hash() uint64 {
	a := binary.BigEndian.Uint32(f.src[:]) ^ binary.BigEndian.Uint32(f.dst[:])
	h := uint64(a)<<32 | uint64(f.sport^f.dport)<<16 | uint64(f.proto)
	h ^= uint64(f.vni) * 0x9e3779b97f4a7c15
	// splitmix64 finaliser
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// tupleOf reads the flow identity of a packet of network vni, and the TCP
// flags and payload length. ok is false for what is not tracked: ICMP
// other than echo (errors belong to the flow they are about), fragments
// after the first, truncated transport headers.
func tupleOf(vni uint32, p ipv4Packet) (f flowTuple, tcpFlags uint8, payload int, ok bool) {
	f = flowTuple{vni: vni, proto: p.hdr.Protocol(), src: p.src, dst: p.dst}
	if p.hdr.FragmentOffset() != 0 {
		return f, 0, 0, false
	}
	l4 := []byte(p.hdr[p.hdr.HeaderLength():])
	switch f.proto {
	case uint8(header.TCPProtocolNumber):
		if len(l4) < header.TCPMinimumSize {
			return f, 0, 0, false
		}
		t := header.TCP(l4)
		off := int(t.DataOffset())
		if off < header.TCPMinimumSize || off > len(l4) {
			return f, 0, 0, false
		}
		f.sport, f.dport = t.SourcePort(), t.DestinationPort()
		return f, uint8(t.Flags()), len(l4) - off, true
	case uint8(header.UDPProtocolNumber):
		if len(l4) < header.UDPMinimumSize {
			return f, 0, 0, false
		}
		u := header.UDP(l4)
		f.sport, f.dport = u.SourcePort(), u.DestinationPort()
		return f, 0, len(l4) - header.UDPMinimumSize, true
	case uint8(header.ICMPv4ProtocolNumber):
		if len(l4) < header.ICMPv4MinimumSize {
			return f, 0, 0, false
		}
		ic := header.ICMPv4(l4)
		switch ic.Type() {
		case header.ICMPv4Echo, header.ICMPv4EchoReply:
			// Request and reply share the ident; the type is not part of
			// the key, so both land in one flow.
			f.sport, f.dport = ic.Ident(), ic.Ident()
			return f, 0, 0, true
		}
		return f, 0, 0, false
	}
	return f, 0, 0, true
}

// flowAcc sums the packets of one flow direction within a batch, so that
// a run of packets of one flow (the common case: a bulk transfer fills a
// batch) costs one lookup and one set of atomic adds. It lives on the
// stack of the caller, which flushes it before the batch ends.
type flowAcc struct {
	s                 *flowSlot
	dir               int
	k0, k1            uint64 // the packets' direction
	pkts, bytes, data uint64
	flags             uint32
	last              int64
}

// flush adds what acc holds to its slot and empties it.
func (a *flowAcc) flush() {
	if a.s == nil {
		return
	}
	s, d := a.s, a.dir
	s.pkts[d].Add(a.pkts)
	s.bytes[d].Add(a.bytes)
	if a.data > 0 {
		s.data[d].Add(a.data)
	}
	s.last.Store(a.last)
	if a.flags != 0 {
		s.flags.Or(a.flags)
	}
	*a = flowAcc{}
}

// track counts packet p of network vni into acc (flushing it first when p
// is of another flow than acc's). create: a packet that starts a flow
// when none matches (a container's own packets, a remote container's);
// replies from the netstack only add to existing flows.
func (t *FlowTable) track(vni uint32, p ipv4Packet, now int64, create bool, acc *flowAcc) {
	f, tcpFlags, payload, ok := tupleOf(vni, p)
	if !ok {
		return
	}
	k0, k1 := f.keys()
	if acc.s == nil || acc.k0 != k0 || acc.k1 != k1 {
		acc.flush()
		s, dir := t.lookup(&f, k0, k1, now, create)
		if s == nil {
			return
		}
		acc.s, acc.dir, acc.k0, acc.k1 = s, dir, k0, k1
	}
	acc.pkts++
	acc.bytes += uint64(p.totalLen())
	acc.data += uint64(payload)
	acc.last = now
	if tcpFlags&uint8(header.TCPFlagRst) != 0 {
		acc.flags |= flowRst
	} else if tcpFlags&uint8(header.TCPFlagFin) != 0 {
		acc.flags |= flowFinOut << acc.dir // flowFinIn is flowFinOut<<1
	}
}

// lookup finds the slot of f (either direction) or, with create, makes
// one; dir is 0 when f is the slot's out direction.
func (t *FlowTable) lookup(f *flowTuple, k0, k1 uint64, now int64, create bool) (*flowSlot, int) {
	r := f.reversed()
	r0, r1 := r.keys()
	start := f.hash()
	for i := range uint64(flowProbe) {
		c := &t.slots[(start+i)&t.mask]
		if c.state.Load() != slotLive {
			continue
		}
		a0, a1 := c.k0.Load(), c.k1.Load()
		if a0 == k0 && a1 == k1 {
			return c, 0
		}
		if a0 == r0 && a1 == r1 {
			return c, 1
		}
	}
	if !create {
		return nil, 0
	}
	s := t.claim(start, k0, k1, now)
	if s == nil {
		t.dropped.Add(1)
	}
	return s, 0
}

// claim takes an empty slot of the window for a new flow.
func (t *FlowTable) claim(start, k0, k1 uint64, now int64) *flowSlot {
	for i := range uint64(flowProbe) {
		c := &t.slots[(start+i)&t.mask]
		if !c.state.CompareAndSwap(slotEmpty, slotClaiming) {
			continue
		}
		c.k0.Store(k0)
		c.k1.Store(k1)
		c.first.Store(now)
		c.last.Store(now)
		c.flags.Store(0)
		for d := range 2 {
			c.pkts[d].Store(0)
			c.bytes[d].Store(0)
			c.data[d].Store(0)
		}
		c.state.Store(slotLive)
		t.created.Add(1)
		t.live.Add(1)
		return c
	}
	return nil
}

// Flow is one flow as Sweep reports it. Src is the initiator.
type Flow struct {
	VNI                   uint32
	Proto                 uint8
	Src, Dst              netip.AddrPort // for ICMP echo the port is the ident
	Start, End            time.Time
	PacketsOut, PacketsIn uint64 // out: Src → Dst
	BytesOut, BytesIn     uint64 // IP bytes
	PayloadOut, PayloadIn uint64 // TCP/UDP payload bytes
	FinOut, FinIn, Reset  bool   // TCP: FIN seen each way, RST seen
	Reason                string // why the record was written: fin, rst, idle, flush
}

// SweepConfig says when Sweep ends a flow.
type SweepConfig struct {
	Idle    time.Duration // no packet for this long: ended (idle)
	Closed  time.Duration // a TCP flow with FIN both ways or RST, silent this long: ended (fin, rst)
	Flush   bool          // end every flow (shutdown)
	Reports func(Flow)    // called for every ended flow, on Sweep's goroutine
}

// Sweep reports and frees the flows that retired at least flowGrace ago,
// then retires the flows that ended now (see the slot life above). With
// Flush it does both at once for every flow: call it only when the packet
// path has stopped (every port closed) or accept that packets racing with
// it may be lost. Sweep must not be called concurrently with itself.
func (t *FlowTable) Sweep(cfg SweepConfig) {
	now := int64(time.Since(t.epoch))
	for i := range t.slots {
		s := &t.slots[i]
		switch s.state.Load() {
		case slotRetiring:
			if cfg.Flush || now-s.retired.Load() >= t.grace {
				t.report(s, cfg.Reports)
			}
		case slotLive:
			reason := t.ended(s, now, cfg)
			if reason == "" {
				continue
			}
			s.flags.Or(reasonFlag(reason))
			s.retired.Store(now)
			if !s.state.CompareAndSwap(slotLive, slotRetiring) {
				continue
			}
			if cfg.Flush {
				t.report(s, cfg.Reports)
			}
		}
	}
}

// The reason a slot retired, kept in its flags until it is reported.
const (
	flowEndIdle uint32 = 1 << (8 + iota)
	flowEndFin
	flowEndRst
	flowEndFlush
)

func reasonFlag(r string) uint32 {
	switch r {
	case "fin":
		return flowEndFin
	case "rst":
		return flowEndRst
	case "flush":
		return flowEndFlush
	}
	return flowEndIdle
}

func (t *FlowTable) ended(s *flowSlot, now int64, cfg SweepConfig) string {
	if cfg.Flush {
		return "flush"
	}
	silent := time.Duration(now - s.last.Load())
	fl := s.flags.Load()
	switch {
	case fl&flowRst != 0 && silent >= cfg.Closed:
		return "rst"
	case fl&flowFinOut != 0 && fl&flowFinIn != 0 && silent >= cfg.Closed:
		return "fin"
	case silent >= cfg.Idle:
		return "idle"
	}
	return ""
}

// report hands a retiring slot's flow to fn and frees the slot.
func (t *FlowTable) report(s *flowSlot, fn func(Flow)) {
	k0, k1 := s.k0.Load(), s.k1.Load()
	var src, dst [4]byte
	binary.BigEndian.PutUint32(src[:], uint32(k0>>32))
	binary.BigEndian.PutUint32(dst[:], uint32(k0))
	fl := s.flags.Load()
	f := Flow{
		VNI:        uint32(k1 >> 40),
		Proto:      uint8(k1 >> 32),
		Src:        netip.AddrPortFrom(netip.AddrFrom4(src), uint16(k1>>16)),
		Dst:        netip.AddrPortFrom(netip.AddrFrom4(dst), uint16(k1)),
		Start:      t.epoch.Add(time.Duration(s.first.Load())),
		End:        t.epoch.Add(time.Duration(s.last.Load())),
		PacketsOut: s.pkts[0].Load(), PacketsIn: s.pkts[1].Load(),
		BytesOut: s.bytes[0].Load(), BytesIn: s.bytes[1].Load(),
		PayloadOut: s.data[0].Load(), PayloadIn: s.data[1].Load(),
		FinOut: fl&flowFinOut != 0, FinIn: fl&flowFinIn != 0, Reset: fl&flowRst != 0,
	}
	switch {
	case fl&flowEndFlush != 0:
		f.Reason = "flush"
	case fl&flowEndFin != 0:
		f.Reason = "fin"
	case fl&flowEndRst != 0:
		f.Reason = "rst"
	default:
		f.Reason = "idle"
	}
	s.state.Store(slotEmpty)
	t.live.Add(-1)
	if fn != nil {
		fn(f)
	}
}

// EnableFlows makes the router count flows in t from now on; nil stops it.
// The table's clock is the router's.
func (r *Router) EnableFlows(t *FlowTable) {
	if t != nil {
		t.epoch = r.epoch
	}
	r.flows.Store(t)
}
