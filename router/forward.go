package router

import "gvisor.dev/gvisor/pkg/tcpip/header"

// forward routes the n packets of the last Read (a.bufs[i][Headroom:] with
// length a.sizes[i]) and writes them out, one Write per destination. now
// is the router clock, for the ICMP rate limit. It runs on a's read
// goroutine only and allocates nothing.
func (a *Attached) forward(n int, now int64) {
	var c batchCounters
	dests := a.dests[:n]
	icmpOut := a.icmpOut[:0]
	for i := range dests {
		dests[i] = nil
		buf := a.bufs[i]
		size := a.sizes[i]
		if size < 0 || size > len(buf)-Headroom {
			// A Port that breaks its contract: count, never slice out of range.
			c[ctrRxPackets]++
			c[dropMalformed]++
			continue
		}
		c[ctrRxPackets]++
		c[ctrRxBytes] += uint64(size)

		pkt, reason, ok := parseIPv4(buf[Headroom : Headroom+size])
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
			a.deliverResolver(pkt, &c, now)
			continue
		}
		if isBroadcastOrMulticast(pkt.dst) {
			c[dropBroadcast]++
			continue
		}
		idx, inNet := indexOf(pkt.dst)
		if !inNet {
			// Node egress (packet path 4); dedicated egress (path 5) will
			// choose a gateway here instead.
			a.deliverEgress(pkt, &c, now)
			continue
		}
		e := a.table.lookup(idx)
		if e == nil {
			c[dropUnknownDestination]++
			icmpOut = a.icmpError(icmpOut, &c, now, pkt, header.ICMPv4HostUnreachable, 0)
			continue
		}
		switch e.kind {
		case entryLocal:
			d := e.port
			if pkt.totalLen() > d.mtu {
				c[dropTooBig]++
				if pkt.dontFragment() {
					icmpOut = a.icmpError(icmpOut, &c, now, pkt, header.ICMPv4FragmentationNeeded, uint16(d.mtu))
				}
				continue
			}
			a.sizes[i] = pkt.totalLen() // drop padding after the IP packet
			dests[i] = d
		case entryRemote:
			o := a.r.overlay.Load()
			if o == nil {
				// A remote entry without an overlay: nowhere to send it.
				c[dropUnknownDestination]++
				icmpOut = a.icmpError(icmpOut, &c, now, pkt, header.ICMPv4HostUnreachable, 0)
				continue
			}
			if pkt.totalLen() > o.mtu {
				c[dropTooBig]++
				if pkt.dontFragment() {
					icmpOut = a.icmpError(icmpOut, &c, now, pkt, header.ICMPv4FragmentationNeeded, uint16(o.mtu))
				}
				continue
			}
			o.send(pkt.hdr, a.table.vni, e.node, &c)
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
		out := a.out[:0]
		var bytes uint64
		for j := i; j < len(dests); j++ {
			if dests[j] == d {
				out = append(out, a.bufs[j][:Headroom+a.sizes[j]])
				bytes += uint64(a.sizes[j])
				dests[j] = nil
			}
		}
		a.writeTo(d, out, bytes, &c)
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
	a.ctr.add(&c)
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
	if _, err := d.port.Write(out, Headroom); err != nil {
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
func (a *Attached) icmpError(out [][]byte, c *batchCounters, now int64, pkt ipv4Packet, code header.ICMPv4Code, mtu uint16) [][]byte {
	if !pkt.mayTriggerICMPError() {
		return out
	}
	if len(out) == len(a.icmpBufs) || !a.icmpLimit.allow(now) {
		c[ctrICMPRateLimited]++
		return out
	}
	b := a.icmpBufs[len(out)]
	a.icmpID++
	n := buildICMPUnreachable(b[Headroom:], a.r.resolver, pkt, code, mtu, a.icmpID)
	return append(out, b[:Headroom+n])
}
