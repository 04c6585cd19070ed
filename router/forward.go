package router

import (
	"github.com/vrouter/vrouter/internal/offload"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// forward routes the b.n packets of the last Read (b.bufs[i][Headroom:]
// with length b.sizes[i]) and writes them out, one Write per destination.
// now is the router clock, for the ICMP rate limit. It runs on a's read
// goroutine only and allocates nothing.
//
// Packets of an OffloadPort may be super-packets or lack their checksum
// (see OffloadPort): they stay whole when they go to another OffloadPort
// of the node and are completed or segmented here for anything else.
func (a *Attached) forward(b *readBatch, now int64) {
	var c batchCounters
	a.overlayFull = false
	pkts := b.pkts[:0]
	segs, segSizes := [][]byte(nil), []int(nil)
	usedSegs := 0
	for i := range b.n {
		buf, size := b.bufs[i], b.sizes[i]
		c[ctrRxPackets]++
		if size < 0 || size > len(buf)-Headroom {
			// A Port that breaks its contract: count, never slice out of range.
			c[dropMalformed]++
			continue
		}
		c[ctrRxBytes] += uint64(size)
		p := buf[:Headroom+size]
		whole := false
		if a.off != nil {
			h := offload.Decode(buf[Headroom-VirtioHdrLen : Headroom])
			if !h.Plain() {
				var toLocal bool
				whole, toLocal = a.keepsWhole(p[Headroom:], h)
				if whole && toLocal && h.Flags&offload.NeedsCsum != 0 {
					// The netstack gets the bare packet: no device
					// will complete the checksum after us.
					if !offload.CompleteChecksum(p[Headroom:], h) {
						c[dropMalformed]++
						continue
					}
				}
				if !whole {
					if h.GSO() != offload.GSONone {
						if segs == nil {
							segs, segSizes = b.segments()
						}
						pkts, usedSegs = a.split(b, pkts, p, h, segs, segSizes, usedSegs, &c, now)
						continue
					}
					if !offload.CompleteChecksum(p[Headroom:], h) {
						c[dropMalformed]++
						continue
					}
					clear(buf[Headroom-VirtioHdrLen : Headroom])
				}
			}
		}
		if len(pkts) == cap(pkts) {
			a.route(b, pkts, &c, now)
			pkts, usedSegs = pkts[:0], 0
		}
		if whole {
			c[ctrGSOWhole]++
		}
		b.gso[len(pkts)] = whole
		pkts = append(pkts, p)
	}
	a.route(b, pkts, &c, now)
	a.ctr.add(&c)
}

// keepsWhole reports whether the packet p (with virtio header h) can go
// out as it is: its destination is a port of this node that takes
// super-packets and its segments fit that port's MTU, or (toLocal) it
// leaves through the node's egress and the network's netstack takes large
// packets.
func (a *Attached) keepsWhole(p []byte, h offload.Hdr) (whole, toLocal bool) {
	pkt, _, ok := parseIPv4(p)
	if !ok {
		return false, false
	}
	gso := h.GSO()
	if gso != offload.GSONone && (gso != offload.GSOTCPv4 || h.GSOSize == 0) {
		return false, false
	}
	idx, inNet := indexOf(pkt.dst)
	if !inNet {
		if pkt.dst == a.r.resolver || isBroadcastOrMulticast(pkt.dst) || a.egress.Load() != nil {
			return false, false
		}
		s := a.table.local.Load()
		return s != nil && s.egress && s.large, true
	}
	e := a.table.lookup(idx)
	if e != nil && e.kind == entryRemote && gso == offload.GSOTCPv4 {
		// The overlay segments it straight into its buffers (sendGSO).
		o := a.r.overlay.Load()
		return o != nil && offload.SegmentLen(pkt.hdr, h) <= o.mtu, false
	}
	if e == nil || e.kind != entryLocal || e.port.off == nil {
		return false, false
	}
	if gso == offload.GSONone {
		// Checksum only: the receiving kernel completes it. A packet
		// larger than the destination's MTU goes the plain way, where
		// the MTU check drops it (AUDIT D13b).
		return int(pkt.totalLen()) <= e.port.mtu, false
	}
	return offload.SegmentLen(pkt.hdr, h) <= e.port.mtu, false
}

// split segments the super-packet p (a buffer with headroom) into the
// batch's segment buffers after the used first ones and appends the
// segments to pkts, routing what is pending whenever the buffers run out,
// so that packets keep their order. Bad super-packets count as malformed.
func (a *Attached) split(b *readBatch, pkts [][]byte, p []byte, h offload.Hdr, segs [][]byte, sizes []int, used int, c *batchCounters, now int64) ([][]byte, int) {
	pkt, reason, ok := parseIPv4(p[Headroom:])
	if !ok {
		c[reason]++
		return pkts, used
	}
	if h.GSO() != offload.GSOTCPv4 {
		c[dropMalformed]++ // only TSO is enabled on our TUNs
		return pkts, used
	}
	first := 0
	for {
		room := min(len(segs)-used, cap(pkts)-len(pkts))
		if room < min(8, len(segs)) {
			// Too little room for a useful run of segments: route what
			// is pending and start over with empty buffers.
			a.route(b, pkts, c, now)
			pkts, used = pkts[:0], 0
			continue
		}
		n, total := offload.SplitTCP(pkt.hdr, int(h.GSOSize), first, segs[used:used+room], sizes[used:used+room], Headroom)
		if n < 0 {
			c[dropMalformed]++
			return pkts, used
		}
		for k := range n {
			seg := segs[used+k][:Headroom+sizes[used+k]]
			clear(seg[Headroom-VirtioHdrLen : Headroom])
			b.gso[len(pkts)] = false
			pkts = append(pkts, seg)
		}
		used += n
		first += n
		c[ctrGSOSegments] += uint64(n)
		if first == total {
			c[ctrGSOSplit]++
			return pkts, used
		}
	}
}

// route forwards pkts (each with Headroom in front) and writes them out.
func (a *Attached) route(b *readBatch, pkts [][]byte, c *batchCounters, now int64) {
	if len(pkts) == 0 {
		return
	}
	dests := b.dests[:len(pkts)]
	icmpOut := b.icmpOut[:0]
	ft := a.r.flows.Load()
	var acc flowAcc // see FlowTable.track
	defer acc.flush()
	for i := range dests {
		dests[i] = nil
		pkt, reason, ok := parseIPv4(pkts[i][Headroom:])
		if !ok {
			c[reason]++
			continue
		}
		if pkt.src != a.addr {
			c[dropSpoofedSource]++
			continue
		}
		if pkt.dst == a.r.resolver {
			// Packet path 3: DNS is the network's Local (a netstack).
			a.deliverResolver(pkt, c, now)
			continue
		}
		if isBroadcastOrMulticast(pkt.dst) {
			c[dropBroadcast]++
			continue
		}
		idx, inNet := indexOf(pkt.dst)
		if !inNet {
			if b.gso[i] && a.egress.Load() != nil {
				// Dedicated egress was set since keepsWhole looked: the
				// overlay cannot take a super-packet. TCP sends it again.
				c[dropTooBig]++
				continue
			}
			// Node egress (packet path 4) or dedicated egress (path 5).
			if a.deliverEgress(pkt, c, now) && ft != nil {
				ft.track(a.table.vni, pkt, now, true, &acc)
			}
			continue
		}
		e := a.table.lookup(idx)
		if e == nil {
			c[dropUnknownDestination]++
			if now >= a.r.quietUntil.Load() {
				icmpOut = a.icmpError(b, icmpOut, c, now, pkt, header.ICMPv4HostUnreachable, 0)
			}
			continue
		}
		if b.gso[i] && e.kind != entryRemote && (e.kind != entryLocal || e.port.off == nil) {
			// The destination changed since keepsWhole looked: a
			// super-packet cannot go there. TCP sends it again.
			c[dropTooBig]++
			continue
		}
		switch e.kind {
		case entryLocal:
			d := e.port
			if !b.gso[i] && pkt.totalLen() > d.mtu {
				c[dropTooBig]++
				if pkt.dontFragment() {
					icmpOut = a.icmpError(b, icmpOut, c, now, pkt, header.ICMPv4FragmentationNeeded, uint16(d.mtu))
				}
				continue
			}
			pkts[i] = pkts[i][:Headroom+pkt.totalLen()] // drop padding after the IP packet
			dests[i] = d
			if ft != nil {
				ft.track(a.table.vni, pkt, now, true, &acc)
			}
		case entryRemote:
			o := a.r.overlay.Load()
			if o == nil {
				// A remote entry without an overlay: nowhere to send it.
				c[dropUnknownDestination]++
				icmpOut = a.icmpError(b, icmpOut, c, now, pkt, header.ICMPv4HostUnreachable, 0)
				continue
			}
			if b.gso[i] {
				h := offload.Decode(pkts[i][Headroom-VirtioHdrLen : Headroom])
				o.sendGSO(a, pkt.hdr, h, a.table.vni, e.node, c)
				if ft != nil {
					ft.track(a.table.vni, pkt, now, true, &acc)
				}
				continue
			}
			if pkt.totalLen() > o.mtu {
				c[dropTooBig]++
				if pkt.dontFragment() {
					icmpOut = a.icmpError(b, icmpOut, c, now, pkt, header.ICMPv4FragmentationNeeded, uint16(o.mtu))
				}
				continue
			}
			o.sendFrom(a, pkt.hdr, a.table.vni, e.node, c)
			if ft != nil {
				ft.track(a.table.vni, pkt, now, true, &acc)
			}
		default:
			c[dropUnknownDestination]++
		}
	}

	// One Write per destination, in order of first appearance. The scan is
	// O(packets × destinations), and a batch rarely has many destinations.
	for i := range dests {
		d := dests[i]
		if d == nil {
			continue
		}
		out := b.out[:0]
		var bytes uint64
		for j := i; j < len(dests); j++ {
			if dests[j] == d {
				out = append(out, pkts[j])
				bytes += uint64(len(pkts[j]) - Headroom)
				dests[j] = nil
			}
		}
		a.writeTo(d, out, bytes, c)
	}

	if len(icmpOut) > 0 {
		var bytes uint64
		for _, b := range icmpOut {
			bytes += uint64(len(b) - Headroom)
		}
		if _, err := a.port.Write(icmpOut, Headroom); err != nil {
			c[ctrICMPWriteErrors] += uint64(len(icmpOut))
			a.r.log.Debug("writing ICMP error failed", "port", a.cfg.Name, "err", err)
		} else {
			c[ctrICMPSent] += uint64(len(icmpOut))
			a.tx.packets.Add(uint64(len(icmpOut)))
			a.tx.bytes.Add(bytes)
		}
	}
}

// writeTo writes one destination's packets of the batch. A failed Write
// counts every packet of the group as write_error: the count Port.Write
// returns is not reliable (wireguard-go's NativeTun returns bytes).
func (a *Attached) writeTo(d *Attached, out [][]byte, bytes uint64, c *batchCounters) {
	if d.closing.Load() {
		// Detached since the lookup: as if the entry were already gone.
		c[dropUnknownDestination] += uint64(len(out))
		return
	}
	var err error
	if a.off != nil && d.off != nil {
		// Every packet of an OffloadPort's batch has a valid virtio-net
		// header in front: the kernel's, or a cleared one (split, completed).
		_, err = d.off.WriteGSO(out, Headroom)
	} else {
		_, err = d.port.Write(out, Headroom)
	}
	if err != nil {
		c[dropWriteError] += uint64(len(out))
		a.r.log.Debug("write to port failed", "from", a.cfg.Name, "to", d.cfg.Name, "packets", len(out), "err", err)
		return
	}
	c[ctrForwarded] += uint64(len(out))
	c[ctrForwardedBytes] += bytes
	d.tx.packets.Add(uint64(len(out)))
	d.tx.bytes.Add(bytes)
}

// icmpError queues an ICMP destination-unreachable for the sender of pkt,
// unless the rules of mayTriggerICMPError or the rate limit say no.
func (a *Attached) icmpError(b *readBatch, out [][]byte, c *batchCounters, now int64, pkt ipv4Packet, code header.ICMPv4Code, mtu uint16) [][]byte {
	if !pkt.mayTriggerICMPError() {
		return out
	}
	if len(out) == len(b.icmpBufs) || !a.icmpLimit.allow(now) {
		c[ctrICMPRateLimited]++
		return out
	}
	buf := b.icmpBufs[len(out)]
	a.icmpID++
	n := buildICMPUnreachable(buf[Headroom:], a.r.resolver, pkt, code, mtu, a.icmpID)
	return append(out, buf[:Headroom+n])
}
