package router

import (
	"fmt"
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Dedicated egress (packet path 5).
//
// Worker side: a port of an app with dedicated egress has an EgressRoute.
// Its packets for outside the network are encapsulated with the route's
// egress VNI (one per app and network, so that flows of networks that use
// the same addresses never meet at the gateway) to a gateway's overlay
// address instead of going to the node's own stack. Each flow is pinned to
// the gateway that took its first packet, so a draining gateway keeps its
// flows while new ones go elsewhere; a flow whose gateway can no longer
// keep it is pinned again to the gateway that takes new flows. With no
// gateway for a new flow the packet is dropped (no_gateway): an app with
// dedicated egress never leaves through the worker's address.
//
// Gateway side: the egress VNI has a table holding remote entries for the
// app's containers in that network (the source check of the overlay works
// unchanged) and a Local with egress: the NAT bound to the app's IP.
// Replies from that Local go back to the containers' nodes through
// WriteLocal, which encapsulates for remote entries.
//
// Return on the worker: SetEgressReturn says which gateways may send
// frames of an egress VNI and which network's ports they are for; only
// ports whose route has that VNI receive them.

// EgressGateway is one gateway of an EgressRoute.
type EgressGateway struct {
	Overlay netip.Addr // the gateway node's overlay address
	// New: the gateway takes new flows (alive, healthy, not draining).
	New bool
	// Existing: the gateway keeps the flows pinned to it (alive; a
	// draining gateway keeps them until they end).
	Existing bool
}

// EgressRoute sends a port's traffic for outside the network to gateways.
type EgressRoute struct {
	VNI      uint32          // the app's egress VNI in the port's network
	Gateways []EgressGateway // in order of preference: the primary first
}

// egressRoute is the immutable form the packet path reads.
type egressRoute struct {
	vni uint32
	gws []egressGW
}

type egressGW struct {
	node          [4]byte
	newOK, keepOK bool
}

// flowIdle is how long a pinned flow may be silent before it is
// forgotten; it matches the NAT's UDP idle timeout, and TCP flows idle
// that long are dead or kept alive by keepalives that re-pin them.
const flowIdle = int64(2 * time.Minute)

// flowKey identifies a flow of one port (the source address is the port's).
type flowKey struct {
	dst          [4]byte
	proto        uint8
	sport, dport uint16 // for ICMP echo: the ident in sport
}

type flowPin struct {
	node [4]byte
	last int64
}

// maxFlows bounds a port's flow table; past it, idle flows are swept and,
// if that frees nothing, new flows are not pinned (they still follow the
// route's first gateway that takes new flows). The sweep walks the whole
// table, so it runs at most once per flowSweepEvery: a container that
// keeps the table full of live flows would otherwise make every new
// flow's first packet cost 16384 map steps (AUDIT D13a).
const (
	maxFlows       = 16384
	flowSweepEvery = int64(time.Second)
)

// SetEgress gives the port a dedicated egress route; nil returns it to
// node egress. Flows already pinned keep their gateway while the new route
// lets them (Existing).
func (a *Attached) SetEgress(rt *EgressRoute) error {
	if rt == nil {
		a.egress.Store(nil)
		return nil
	}
	if !IsEgressVNI(rt.VNI) {
		return fmt.Errorf("port %s: VNI %d is not an egress VNI (%d..%d)", a.cfg.Name, rt.VNI, EgressVNIBit, MaxVNI)
	}
	er := &egressRoute{vni: rt.VNI}
	for _, g := range rt.Gateways {
		if !g.Overlay.Is4() {
			return fmt.Errorf("port %s: gateway overlay address %s is not IPv4", a.cfg.Name, g.Overlay)
		}
		er.gws = append(er.gws, egressGW{node: g.Overlay.As4(), newOK: g.New, keepOK: g.Existing})
	}
	a.egress.Store(er)
	return nil
}

// EgressVNI returns the port's egress VNI, 0 without dedicated egress.
func (a *Attached) EgressVNI() uint32 {
	if er := a.egress.Load(); er != nil {
		return er.vni
	}
	return 0
}

// sendEgress forwards a packet for outside the network to the port's
// gateway. It runs on the port's read goroutine, which owns a.flows.
func (a *Attached) sendEgress(er *egressRoute, pkt ipv4Packet, c *batchCounters, now int64) {
	o := a.r.overlay.Load()
	if o == nil {
		c[dropNoGateway]++
		return
	}
	if pkt.totalLen() > o.mtu {
		c[dropTooBig]++
		return
	}
	key, ok := flowOf(pkt)
	var node [4]byte
	pinned := false
	if ok {
		if p, found := a.flows[key]; found && er.keeps(p.node) {
			node, pinned = p.node, true
		}
	}
	if !pinned {
		n, found := er.pickNew()
		if !found {
			c[dropNoGateway]++
			return
		}
		node = n
	}
	if ok {
		a.pinFlow(key, node, now)
	}
	o.sendFrom(a, pkt.hdr, er.vni, node, c)
}

func (er *egressRoute) keeps(node [4]byte) bool {
	for _, g := range er.gws {
		if g.node == node {
			return g.keepOK
		}
	}
	return false
}

func (er *egressRoute) pickNew() ([4]byte, bool) {
	for _, g := range er.gws {
		if g.newOK {
			return g.node, true
		}
	}
	return [4]byte{}, false
}

func (a *Attached) pinFlow(k flowKey, node [4]byte, now int64) {
	if p, ok := a.flows[k]; ok {
		p.node, p.last = node, now
		a.flows[k] = p
		return
	}
	if len(a.flows) >= maxFlows {
		if now-a.flowSwept < flowSweepEvery {
			return
		}
		a.flowSwept = now
		for fk, p := range a.flows {
			if now-p.last > flowIdle {
				delete(a.flows, fk)
			}
		}
		if len(a.flows) >= maxFlows {
			return
		}
	}
	if a.flows == nil {
		a.flows = make(map[flowKey]flowPin)
	}
	a.flows[k] = flowPin{node: node, last: now}
}

// flowOf returns the flow key of a TCP, UDP or ICMP echo packet. Fragments
// after the first carry no ports: they are not pinned (ok false).
func flowOf(pkt ipv4Packet) (flowKey, bool) {
	h := pkt.hdr
	if h.FragmentOffset() != 0 {
		return flowKey{}, false
	}
	k := flowKey{dst: pkt.dst, proto: h.Protocol()}
	l4 := h[h.HeaderLength():]
	switch header.IPv4(h).TransportProtocol() {
	case header.TCPProtocolNumber, header.UDPProtocolNumber:
		if len(l4) < 4 {
			return flowKey{}, false
		}
		k.sport = uint16(l4[0])<<8 | uint16(l4[1])
		k.dport = uint16(l4[2])<<8 | uint16(l4[3])
	case header.ICMPv4ProtocolNumber:
		if len(l4) < header.ICMPv4MinimumSize {
			return flowKey{}, false
		}
		k.sport = header.ICMPv4(l4).Ident()
	default:
		return flowKey{}, false
	}
	return k, true
}

// egressReturn says which gateways may send frames of an egress VNI to
// this node, and to which network's ports.
type egressReturn struct {
	network  *table
	gateways [][4]byte
}

// SetEgressReturn accepts frames of egress VNI vni from the given gateways
// (their overlay addresses) for the ports of network (the VNI of PN pn,
// which must own it) whose route uses vni. No gateways removes the entry.
func (r *Router) SetEgressReturn(vni, network uint32, pn string, gateways []netip.Addr) error {
	if len(gateways) > 0 && (!IsEgressVNI(vni) || !IsNetworkVNI(network)) {
		return fmt.Errorf("egress return: VNI %d is not an egress VNI or network %d not a private network's", vni, network)
	}
	r.state.Lock()
	defer r.state.Unlock()
	if len(gateways) == 0 {
		if _, ok := r.state.returns[vni]; ok {
			delete(r.state.returns, vni)
			r.publishReturns()
		}
		return nil
	}
	t := r.state.networks[network]
	if t == nil {
		return fmt.Errorf("egress return %d: network %d has no ports", vni, network)
	}
	if t.owner != pn {
		r.vniRefused.Add(1)
		return fmt.Errorf("egress return %d: network %d is %s's, not %s's: %w", vni, network, t.owner, pn, ErrVNIOwned)
	}
	er := &egressReturn{network: t}
	for _, g := range gateways {
		if !g.Is4() {
			return fmt.Errorf("egress return %d: gateway %s is not IPv4", vni, g)
		}
		er.gateways = append(er.gateways, g.As4())
	}
	r.state.returns[vni] = er
	r.publishReturns()
	return nil
}

// publishReturns republishes the egress returns for the overlay's receive
// path. Callers hold r.state.
func (r *Router) publishReturns() {
	m := make(map[uint32]*egressReturn, len(r.state.returns))
	for k, v := range r.state.returns {
		m[k] = v
	}
	r.returns.Store(&m)
}

// returnDest returns the local port a frame of egress VNI vni from node
// may deliver pkt to, or a drop reason.
//
// What comes back from a gateway is the NAT's answer from outside the
// network: an inner source inside the network range (a gateway posing as
// the container's peers), the resolver (posing as its DNS), a broadcast,
// multicast or "this network" address is refused (return_source).
func (r *Router) returnDest(vni uint32, node [4]byte, pkt ipv4Packet) (*Attached, counter) {
	m := r.returns.Load()
	if m == nil {
		return nil, dropUnknownVNI
	}
	er := (*m)[vni]
	if er == nil {
		return nil, dropUnknownVNI
	}
	allowed := false
	for _, g := range er.gateways {
		if g == node {
			allowed = true
			break
		}
	}
	if !allowed {
		return nil, dropForgedSource
	}
	if _, in := indexOf(pkt.src); in || pkt.src == r.resolver || pkt.src[0] == 0 || isBroadcastOrMulticast(pkt.src) {
		return nil, dropReturnSource
	}
	di, in := indexOf(pkt.dst)
	if !in {
		return nil, dropUnknownDestination
	}
	de := er.network.lookup(di)
	if de == nil || de.kind != entryLocal || de.port.EgressVNI() != vni {
		return nil, dropUnknownDestination
	}
	return de.port, 0
}

// BatchLocal is a Local that also takes several packets in one call.
// At a gateway the overlay hands an egress VNI's NAT the packets of one
// decrypted batch together, so that the NAT can coalesce a flow's
// consecutive TCP segments before its netstack (one segment through
// gVisor's TCP instead of dozens, and fewer ACKs back over the overlay).
// pkts and the packets are only valid during the call, as for Deliver.
type BatchLocal interface {
	Local
	DeliverBatch(pkts [][]byte)
}

// egressBatch gathers the packets of one overlay batch for a gateway's
// NATs: a run of packets for the same BatchLocal goes over in one
// DeliverBatch. It lives in an overlay scratch and holds packets only
// until flush, which the batch's handler calls before it returns.
type egressBatch struct {
	to   BatchLocal
	pkts [][]byte // made on first use, capacity overlayBatch
}

// add hands pkt to the Local of s, at once for a Local that only takes
// single packets, else with the run of packets for the same Local.
func (b *egressBatch) add(s *localSink, pkt []byte) {
	bl, ok := s.l.(BatchLocal)
	if !ok {
		s.l.Deliver(pkt)
		return
	}
	if b.pkts == nil {
		b.pkts = make([][]byte, 0, overlayBatch)
	}
	if b.to != bl || len(b.pkts) == cap(b.pkts) {
		b.flush()
		b.to = bl
	}
	b.pkts = append(b.pkts, pkt)
}

// flush delivers the pending run and forgets its packets.
func (b *egressBatch) flush() {
	if len(b.pkts) > 0 {
		b.to.DeliverBatch(b.pkts)
	}
	clear(b.pkts)
	b.pkts = b.pkts[:0]
	b.to = nil
}
