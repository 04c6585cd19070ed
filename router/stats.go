package router

import "sync/atomic"

// counter indexes the per-port counter arrays. The drop reasons come first
// and in the order DropReasons reports them.
type counter int

const (
	dropMalformed counter = iota
	dropNotIPv4
	dropSpoofedSource
	dropUnknownDestination
	dropOutsideNetwork
	dropResolver
	dropBroadcast
	dropTooBig
	dropWriteError
	dropVXLANMalformed
	dropUnknownVNI
	dropForgedSource
	dropOverlayQueueFull
	dropStackRateLimited
	dropNoGateway
	dropReturnSource
	dropOverlayEgress
	dropOverlayFairShare
	numDrops
)

// Counters that are not drops follow the drop reasons.
const (
	ctrRxPackets = numDrops + iota
	ctrRxBytes
	ctrForwarded
	ctrForwardedBytes
	ctrICMPSent
	ctrICMPRateLimited
	ctrICMPWriteErrors
	ctrReadErrors
	ctrEncapsulated
	ctrEncapsulatedBytes
	ctrDecapsulated
	ctrToStack
	ctrGSOWhole    // super-packets written whole to an OffloadPort
	ctrGSOSplit    // super-packets segmented by the router
	ctrGSOSegments // the segments they made
	// The overlay's Reads that waited for wireguard-go to send what it
	// had (overlay_inflight.go), and the waits that gave up on frames it
	// lost.
	ctrOverlayInflightWaits
	ctrOverlayInflightLost
	ctrFairPauses // a backlogged port paused for another network (fair.go)
	// A port over its resolver rate paused for another network (fair.go).
	ctrFairResolverPauses
	numCounters
)

var counterNames = [numCounters]string{
	dropMalformed:           "malformed",
	dropNotIPv4:             "not_ipv4",
	dropSpoofedSource:       "spoofed_source",
	dropUnknownDestination:  "unknown_destination",
	dropOutsideNetwork:      "outside_network",
	dropResolver:            "resolver",
	dropBroadcast:           "broadcast",
	dropTooBig:              "too_big",
	dropWriteError:          "write_error",
	dropVXLANMalformed:      "vxlan_malformed",
	dropUnknownVNI:          "unknown_vni",
	dropForgedSource:        "forged_source",
	dropOverlayQueueFull:    "overlay_queue_full",
	dropStackRateLimited:    "stack_rate_limited",
	dropNoGateway:           "no_gateway",
	dropReturnSource:        "return_source",
	dropOverlayEgress:       "overlay_egress",
	dropOverlayFairShare:    "overlay_fair_share",
	ctrRxPackets:            "rx_packets",
	ctrRxBytes:              "rx_bytes",
	ctrForwarded:            "forwarded",
	ctrForwardedBytes:       "forwarded_bytes",
	ctrICMPSent:             "icmp_sent",
	ctrICMPRateLimited:      "icmp_rate_limited",
	ctrICMPWriteErrors:      "icmp_write_errors",
	ctrReadErrors:           "read_errors",
	ctrEncapsulated:         "encapsulated",
	ctrEncapsulatedBytes:    "encapsulated_bytes",
	ctrDecapsulated:         "decapsulated",
	ctrToStack:              "to_stack",
	ctrGSOWhole:             "gso_whole",
	ctrGSOSplit:             "gso_split",
	ctrGSOSegments:          "gso_segments",
	ctrOverlayInflightWaits: "overlay_inflight_waits",
	ctrOverlayInflightLost:  "overlay_inflight_lost",
	ctrFairPauses:           "fair_pauses",
	ctrFairResolverPauses:   "fair_resolver_pauses",
}

// DropReasons returns the names of every drop reason, in a stable order.
// Stats.Drops has exactly these keys.
func DropReasons() []string {
	r := make([]string, numDrops)
	copy(r, counterNames[:numDrops])
	return r
}

// Stats is a snapshot of the router's counters, summed over every port that
// is or ever was attached.
//
// Counters: rx_packets and rx_bytes (read from ports), forwarded and
// forwarded_bytes (written to a destination port), icmp_sent,
// icmp_rate_limited (errors suppressed by the per-port limit),
// icmp_write_errors, read_errors, encapsulated (forwarded packets queued
// for another node) and decapsulated (packets from another node written to
// a port; also counted as forwarded), to_stack (handed to the network's
// Local: DNS, egress). rx_packets includes frames received from the
// overlay, so the invariant holds for both directions. Every packet read is
// forwarded, handed to the stack or counted under exactly one drop reason:
// rx_packets == forwarded + to_stack + sum(Drops). Packets the stack sends
// back are counted apart: from_stack, from_stack_bytes and
// from_stack_dropped.
type Stats struct {
	Counters map[string]uint64
	Drops    map[string]uint64 // every reason of DropReasons, even when 0
	Ports    int               // ports attached now
	Networks int               // networks with at least one attached port or remote entry
}

// PortStats is a snapshot of one port's traffic. Rx counts packets the
// container sent (read from the port), Tx packets written to it, Drops the
// packets from this port that were not forwarded.
type PortStats struct {
	RxPackets, RxBytes uint64
	TxPackets, TxBytes uint64
	Drops              uint64
}

// NumDropReasons is len(DropReasons()): the size of Counters.Drops.
const NumDropReasons = int(numDrops)

// Counters is a snapshot of the traffic of one port or of one network,
// for metrics. Rx is what the containers sent (read from their ports), Tx
// what was written to them (from ports of this node, from other nodes, ICMP
// errors of the router). Of the packets read, Local went to a port of this
// node, Overlay to a container of another node, Stack to the network's
// netstack (DNS, egress); Drops[i] is the count of DropReasons()[i].
type Counters struct {
	RxPackets, RxBytes           uint64
	TxPackets, TxBytes           uint64
	LocalPackets, LocalBytes     uint64
	OverlayPackets, OverlayBytes uint64
	StackPackets                 uint64
	Drops                        [NumDropReasons]uint64
}

func (b *batchCounters) counters(txPackets, txBytes uint64) Counters {
	c := Counters{
		RxPackets:      b[ctrRxPackets],
		RxBytes:        b[ctrRxBytes],
		TxPackets:      txPackets,
		TxBytes:        txBytes,
		OverlayPackets: b[ctrEncapsulated],
		OverlayBytes:   b[ctrEncapsulatedBytes],
		LocalPackets:   b[ctrForwarded] - b[ctrEncapsulated],
		LocalBytes:     b[ctrForwardedBytes] - b[ctrEncapsulatedBytes],
		StackPackets:   b[ctrToStack],
	}
	copy(c.Drops[:], b[:numDrops])
	return c
}

// add sums o into c.
func (c *Counters) add(o *Counters) {
	c.RxPackets += o.RxPackets
	c.RxBytes += o.RxBytes
	c.TxPackets += o.TxPackets
	c.TxBytes += o.TxBytes
	c.LocalPackets += o.LocalPackets
	c.LocalBytes += o.LocalBytes
	c.OverlayPackets += o.OverlayPackets
	c.OverlayBytes += o.OverlayBytes
	c.StackPackets += o.StackPackets
	for i := range c.Drops {
		c.Drops[i] += o.Drops[i]
	}
}

// counters is a port's share of the router counters. Only the port's read
// goroutine adds to it (once per batch), so the atomics are uncontended;
// Router.Stats sums them.
type counters [numCounters]atomic.Uint64

// batchCounters accumulates one batch on the stack before it is folded into
// counters, so the per-packet cost is a plain increment.
type batchCounters [numCounters]uint64

func (c *counters) add(b *batchCounters) {
	for i, v := range b {
		if v != 0 {
			c[i].Add(v)
		}
	}
}

func (c *counters) snapshot(into *batchCounters) {
	for i := range c {
		into[i] += c[i].Load()
	}
}

func (b *batchCounters) drops() uint64 {
	var n uint64
	for _, v := range b[:numDrops] {
		n += v
	}
	return n
}

func (b *batchCounters) toStats() Stats {
	s := Stats{
		Counters: make(map[string]uint64, numCounters-numDrops),
		Drops:    make(map[string]uint64, numDrops),
	}
	for i, v := range b {
		if counter(i) < numDrops {
			s.Drops[counterNames[i]] = v
		} else {
			s.Counters[counterNames[i]] = v
		}
	}
	return s
}
