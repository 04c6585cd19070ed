package router

import (
	"encoding/binary"
	"maps"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Overlay probes: a worker checks that each of its apps' gateways answers
// over the overlay itself (WireGuard and the gateway's router), faster
// than memberlist declares a node dead. A probe is a VXLAN frame with VNI
// 0, which no network uses, carrying an ICMP echo request between the two
// nodes' overlay addresses; the receiving router answers it with an echo
// reply in the same way. Probes never reach a port or a netstack, and
// count in neither the port counters nor the overlay's rx balance.
//
// A node is also heard when any other frame arrives from it over the
// overlay: under load the probes and their answers may find the overlay
// queue full and be dropped (overlay_queue_full), while the traffic that
// fills it proves the session alive.
const probeVNI = 0

// probeState is when each probed node was last heard, by overlay address.
type probeState struct {
	mu sync.Mutex // serialises writers of heard and seq
	// heard maps every node ever probed to the router clock of the last
	// frame from it (echo reply or traffic). Copy-on-write: the overlay's
	// receivers read it on every Write without a lock or an allocation.
	heard    atomic.Pointer[map[[4]byte]*atomic.Int64]
	seq      uint16
	sent     atomic.Uint64
	answered atomic.Uint64 // echo requests from other nodes answered
	replies  atomic.Uint64 // echo replies received
}

// ProbeOverlay sends one probe to each node (overlay addresses). Without
// an overlay it does nothing.
func (r *Router) ProbeOverlay(nodes []netip.Addr) {
	o := r.overlay.Load()
	if o == nil {
		return
	}
	var pkt [header.IPv4MinimumSize + header.ICMPv4MinimumSize]byte
	for _, n := range nodes {
		if !n.Is4() {
			continue
		}
		r.probe.mu.Lock()
		r.probe.track(n.As4())
		r.probe.seq++
		seq := r.probe.seq
		r.probe.mu.Unlock()
		buildProbe(pkt[:], o.localAddr(), n.As4(), header.ICMPv4Echo, seq)
		var c batchCounters
		o.send(pkt[:], probeVNI, n.As4(), &c)
		if c[ctrEncapsulated] == 1 {
			r.probe.sent.Add(1)
		}
	}
}

// OverlaySeen returns when node last answered a probe; zero if never.
func (r *Router) OverlaySeen(node netip.Addr) time.Time {
	if !node.Is4() {
		return time.Time{}
	}
	var t int64
	if m := r.probe.heard.Load(); m != nil {
		if h := (*m)[node.As4()]; h != nil {
			t = h.Load()
		}
	}
	if t == 0 {
		return time.Time{}
	}
	return r.epoch.Add(time.Duration(t))
}

// track gives node a slot in heard. Callers hold mu.
func (p *probeState) track(node [4]byte) {
	old := p.heard.Load()
	if old != nil && (*old)[node] != nil {
		return
	}
	m := make(map[[4]byte]*atomic.Int64, 1)
	if old != nil {
		maps.Copy(m, *old)
	}
	m[node] = new(atomic.Int64)
	p.heard.Store(&m)
}

// hear records a frame from node at now (router clock) if node is probed.
// It allocates nothing: it is on the overlay's receive path.
func (p *probeState) hear(node [4]byte, now int64) {
	if m := p.heard.Load(); m != nil {
		if h := (*m)[node]; h != nil {
			h.Store(max(now, 1)) // 0 is never heard
		}
	}
}

// handleProbe answers a probe or records an answer. Called from
// Overlay.Write with the frame's outer source.
func (o *Overlay) handleProbe(from [4]byte, inner []byte) {
	if len(inner) < header.IPv4MinimumSize+header.ICMPv4MinimumSize {
		return
	}
	ip := header.IPv4(inner)
	if ip.Protocol() != uint8(header.ICMPv4ProtocolNumber) || ip.HeaderLength() != header.IPv4MinimumSize ||
		ip.SourceAddress().As4() != from || ip.DestinationAddress().As4() != o.localAddr() {
		return
	}
	ic := header.ICMPv4(inner[header.IPv4MinimumSize:])
	switch ic.Type() {
	case header.ICMPv4Echo:
		var pkt [header.IPv4MinimumSize + header.ICMPv4MinimumSize]byte
		buildProbe(pkt[:], o.localAddr(), from, header.ICMPv4EchoReply, ic.Sequence())
		var c batchCounters
		o.send(pkt[:], probeVNI, from, &c)
		if c[ctrEncapsulated] == 1 {
			o.r.probe.answered.Add(1)
		}
	case header.ICMPv4EchoReply:
		o.r.probe.replies.Add(1)
		o.r.probe.hear(from, o.r.now())
	}
}

// buildProbe writes an IPv4/ICMP echo packet of the given type into b.
func buildProbe(b []byte, src, dst [4]byte, typ header.ICMPv4Type, seq uint16) {
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.ICMPv4ProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(src), DstAddr: tcpip.AddrFrom4(dst),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	ic := header.ICMPv4(b[header.IPv4MinimumSize:])
	clear(ic)
	ic.SetType(typ)
	binary.BigEndian.PutUint16(ic[4:], 0x7672) // ident "vr"
	ic.SetSequence(seq)
	ic.SetChecksum(^checksum.Checksum(ic, 0))
}
