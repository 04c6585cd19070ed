package router

import (
	"encoding/binary"
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
const probeVNI = 0

// probeState is the last answer from each node, by overlay address.
type probeState struct {
	mu       sync.Mutex
	lastSeen map[[4]byte]int64 // router clock of the last echo reply
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
	r.probe.mu.Lock()
	t, ok := r.probe.lastSeen[node.As4()]
	r.probe.mu.Unlock()
	if !ok {
		return time.Time{}
	}
	return r.epoch.Add(time.Duration(t))
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
		now := o.r.now()
		o.r.probe.mu.Lock()
		o.r.probe.lastSeen[from] = now
		o.r.probe.mu.Unlock()
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
