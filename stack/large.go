package stack

import (
	"bytes"
	"math/bits"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TakesLarge implements router.LargeLocal: a container's TCP super-packets
// (up to 64 KiB, checksum complete) reach the stack whole. gVisor's TCP
// takes a segment larger than the MSS it advertised like any other, and
// one segment through the stack instead of forty-odd is most of the cost
// of node egress.
func (s *Stack) TakesLarge() bool { return true }

// groMaxSegs bounds the segments of one coalesced packet: a 64 KiB packet
// of segments at the usual MSS (1350) has about 48.
const groMaxSegs = 64

// DeliverBatch implements router.BatchLocal: it injects the packets of one
// overlay batch (a gateway's NAT, packet path 5), coalescing each run of
// consecutive TCP segments of one flow into one packet of up to 64 KiB
// first, as a kernel's GRO would. A worker's container sends super-packets
// that the worker cuts to the overlay's MTU; at the NAT, gVisor's TCP then
// processes (and acknowledges) one segment where it would have processed
// dozens. Packets keep their order; what cannot be merged goes in as
// Deliver would take it.
func (s *Stack) DeliverBatch(pkts [][]byte) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return
	}
	var run groRun
	for _, p := range pkts {
		if s.dnsUDP != nil && s.dnsUDP.deliver(p) {
			continue
		}
		if run.n > 0 && run.add(p) {
			continue
		}
		run.flush(s.link)
		if !run.start(p) {
			s.link.deliver(p)
		}
	}
	run.flush(s.link)
}

// groRun is the packet being coalesced: the first segment whole, the
// payloads of the others, all still in the caller's buffers.
type groRun struct {
	segs    [groMaxSegs][]byte
	sums    [groMaxSegs]uint16 // checksum of each segment's payload
	n       int
	size    int // IPv4 total length of the merged packet
	hl      int // IPv4 + TCP header length
	gsoSize int // payload of the first segment: no later one is larger
	nextSeq uint32
	psh     bool // a segment with PSH ended the run
	closed  bool // nothing more joins: PSH or a shorter segment
}

// groSegment returns the IPv4 packet in p (without padding), its TCP
// header length and the checksum of its payload if it is a segment the
// run may merge: IPv4 without options, DF and not a fragment, TCP with ACK
// and at most PSH, with a payload, and both checksums valid. Merging hides
// the segments' own checksums from gVisor, so they are verified here, as
// a kernel's GRO does; the payload sums make the merged packet's.
func groSegment(p []byte) (pkt []byte, thl int, sum uint16, ok bool) {
	if len(p) < header.IPv4MinimumSize+header.TCPMinimumSize || p[0] != 0x45 {
		return nil, 0, 0, false
	}
	ip := header.IPv4(p)
	tl := int(ip.TotalLength())
	if tl > len(p) || tl < header.IPv4MinimumSize+header.TCPMinimumSize ||
		ip.Protocol() != uint8(header.TCPProtocolNumber) || ip.Flags() != header.IPv4FlagDontFragment || ip.FragmentOffset() != 0 {
		return nil, 0, 0, false
	}
	p = p[:tl]
	tcp := header.TCP(p[header.IPv4MinimumSize:])
	thl = int(tcp.DataOffset())
	if thl < header.TCPMinimumSize || header.IPv4MinimumSize+thl >= tl {
		return nil, 0, 0, false // no payload: pure ACKs stay as they are
	}
	if f := tcp.Flags(); f&^(header.TCPFlagAck|header.TCPFlagPsh) != 0 || f&header.TCPFlagAck == 0 {
		return nil, 0, 0, false
	}
	if ip.CalculateChecksum() != 0xffff {
		return nil, 0, 0, false
	}
	hl := header.IPv4MinimumSize + thl
	pseudo := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(tl-header.IPv4MinimumSize))
	sum = checksum.Checksum(p[hl:], 0)
	if checksum.Combine(checksum.Checksum(p[header.IPv4MinimumSize:hl], pseudo), sum) != 0xffff {
		return nil, 0, 0, false
	}
	return p, thl, sum, true
}

// start opens a run with p, if p may be merged.
func (r *groRun) start(p []byte) bool {
	p, thl, sum, ok := groSegment(p)
	if !ok {
		return false
	}
	hl := header.IPv4MinimumSize + thl
	tcp := header.TCP(p[header.IPv4MinimumSize:])
	payload := len(p) - hl
	psh := tcp.Flags()&header.TCPFlagPsh != 0
	r.segs[0], r.sums[0] = p, sum
	r.n, r.size, r.hl, r.gsoSize = 1, len(p), hl, payload
	r.nextSeq = tcp.SequenceNumber() + uint32(payload)
	r.psh, r.closed = psh, psh
	return true
}

// add appends p to the run if it continues it: the same flow, addresses,
// TOS, TTL and TCP header but for the sequence number (the next one),
// flags and checksum, a payload no larger than the first one's, and room.
func (r *groRun) add(p []byte) bool {
	if r.closed || r.n == groMaxSegs {
		return false
	}
	p, thl, sum, ok := groSegment(p)
	if !ok || header.IPv4MinimumSize+thl != r.hl {
		return false
	}
	payload := len(p) - r.hl
	if payload > r.gsoSize || r.size+payload > 0xffff {
		return false
	}
	head := r.segs[0]
	if head[1] != p[1] || head[8] != p[8] || !bytes.Equal(head[12:20], p[12:20]) {
		return false
	}
	htcp, tcp := head[header.IPv4MinimumSize:r.hl], header.TCP(p[header.IPv4MinimumSize:r.hl])
	if tcp.SequenceNumber() != r.nextSeq {
		return false
	}
	// Ports, ack, data offset, window, urgent pointer and options.
	if !bytes.Equal(htcp[0:4], tcp[0:4]) || !bytes.Equal(htcp[8:13], tcp[8:13]) ||
		!bytes.Equal(htcp[14:16], tcp[14:16]) || !bytes.Equal(htcp[18:], tcp[18:]) {
		return false
	}
	r.segs[r.n], r.sums[r.n] = p[r.hl:], sum
	r.n++
	r.size += payload
	r.nextSeq += uint32(payload)
	if tcp.Flags()&header.TCPFlagPsh != 0 {
		r.psh, r.closed = true, true
	}
	if payload < r.gsoSize {
		r.closed = true
	}
	return true
}

// flush delivers the run (one packet as it came, several as one) and
// empties it.
func (r *groRun) flush(l *link) {
	switch r.n {
	case 0:
		return
	case 1:
		l.deliver(r.segs[0])
	default:
		v := buffer.NewView(r.size)
		for _, b := range r.segs[:r.n] {
			v.Write(b)
		}
		p := v.AsSlice()
		ip := header.IPv4(p)
		ip.SetTotalLength(uint16(r.size))
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
		tcp := header.TCP(p[header.IPv4MinimumSize:])
		if r.psh {
			tcp.SetFlags(uint8(tcp.Flags() | header.TCPFlagPsh))
		}
		// The payloads' sums make the payload's: a payload that starts
		// at an odd offset adds its sum byte-swapped.
		var sum uint16
		off := 0
		for i, b := range r.segs[:r.n] {
			s := r.sums[i]
			if off%2 == 1 {
				s = bits.ReverseBytes16(s)
			}
			sum = checksum.Combine(sum, s)
			if i == 0 {
				off += len(b) - r.hl
			} else {
				off += len(b)
			}
		}
		tcp.SetChecksum(0)
		pseudo := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(r.size-header.IPv4MinimumSize))
		tcp.SetChecksum(^checksum.Combine(checksum.Checksum(p[header.IPv4MinimumSize:r.hl], pseudo), sum))
		l.deliverMerged(v, r.n)
	}
	clear(r.segs[:r.n])
	r.n = 0
}
