package offload

import (
	"bytes"
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Coalesce does generic receive offload for a batch of packets about to be
// written to a TUN with IFF_VNET_HDR: runs of consecutive TCP/IPv4
// segments of one flow become one super-packet (GSO TCPv4, partial
// checksum), so that the container's kernel takes one 64 KiB packet
// through its stack instead of forty. Packet i is bufs[i][offset:]
// (offset ≥ HdrLen). A segment is appended into the spare capacity of the
// first packet of its run, as wireguard-go does, so only buffers with room
// beyond their length absorb others.
//
// It returns out with the packets to write, each preceded by its virtio-net
// header at [offset-HdrLen:offset] (zero for a packet left alone), and
// changes bufs in place. Only segments the kernel's GRO would merge are
// merged: same addresses, ports, TCP header words (ack, window, options),
// TOS, TTL and DF; consecutive sequence numbers; ACK and at most PSH, PSH
// ending a run; equal payload sizes except a shorter last one; valid
// checksums (a merged packet's checksum is not checked again).
func Coalesce(bufs [][]byte, offset int, out [][]byte) [][]byte {
	var run groRun
	for i := range bufs {
		if run.open() && run.add(bufs, i, offset) {
			continue
		}
		if run.open() {
			out = append(out, run.finish(bufs, offset))
		}
		if run.start(bufs, i, offset) {
			continue
		}
		clear(bufs[i][offset-HdrLen : offset])
		out = append(out, bufs[i])
	}
	if run.open() {
		out = append(out, run.finish(bufs, offset))
	}
	return out
}

// groRun is the super-packet being built: its first packet's index and
// what the next segment must match.
type groRun struct {
	head    int // index in bufs of the first packet
	n       int // segments in the run
	thl     int // TCP header length
	gsoSize int // payload of the first segment
	nextSeq uint32
	closed  bool // a shorter segment or PSH ended it: nothing more joins
	active  bool // a run is open
}

func (r *groRun) open() bool { return r.active }

// segment returns the TCP header length and payload length of a mergeable
// TCP/IPv4 segment, or ok false.
func segment(p []byte) (thl, payload int, ok bool) {
	if len(p) < header.IPv4MinimumSize+header.TCPMinimumSize {
		return 0, 0, false
	}
	ip := header.IPv4(p)
	// No IP options; DF set, so that IP IDs need not follow each other
	// (the kernel's rule for merging without DF).
	if p[0] != 0x45 || int(ip.TotalLength()) != len(p) || ip.Protocol() != uint8(header.TCPProtocolNumber) ||
		ip.Flags() != header.IPv4FlagDontFragment || ip.FragmentOffset() != 0 {
		return 0, 0, false
	}
	tcp := header.TCP(p[header.IPv4MinimumSize:])
	thl = int(tcp.DataOffset())
	if thl < header.TCPMinimumSize || header.IPv4MinimumSize+thl > len(p) {
		return 0, 0, false
	}
	if f := tcp.Flags(); f&^(header.TCPFlagAck|header.TCPFlagPsh) != 0 || f&header.TCPFlagAck == 0 {
		return 0, 0, false
	}
	payload = len(p) - header.IPv4MinimumSize - thl
	if payload == 0 {
		return 0, 0, false // pure ACKs stay as they are
	}
	// Merging hides the segments' own checksums from the receiver: check
	// them here, as the kernel's GRO would have.
	if ip.CalculateChecksum() != 0xffff {
		return 0, 0, false
	}
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(p)-header.IPv4MinimumSize))
	if checksum.Checksum(p[header.IPv4MinimumSize:], sum) != 0xffff {
		return 0, 0, false
	}
	return thl, payload, true
}

func (r *groRun) start(bufs [][]byte, i, offset int) bool {
	p := bufs[i][offset:]
	thl, payload, ok := segment(p)
	if !ok {
		return false
	}
	tcp := header.TCP(p[header.IPv4MinimumSize:])
	*r = groRun{
		head: i, n: 1, thl: thl, gsoSize: payload, active: true,
		nextSeq: tcp.SequenceNumber() + uint32(payload),
		closed:  tcp.Flags()&header.TCPFlagPsh != 0,
	}
	return true
}

// add appends packet i to the run if it continues it and fits.
func (r *groRun) add(bufs [][]byte, i, offset int) bool {
	if r.closed {
		return false
	}
	head := bufs[r.head][offset:]
	p := bufs[i][offset:]
	thl, payload, ok := segment(p)
	if !ok || thl != r.thl || payload > r.gsoSize {
		return false
	}
	hl := header.IPv4MinimumSize + thl
	if len(head)+payload > 65535 || cap(bufs[r.head])-offset-len(head) < payload {
		return false
	}
	if !sameIPv4(head, p, 20) {
		return false
	}
	htcp, tcp := header.TCP(head[header.IPv4MinimumSize:hl]), header.TCP(p[header.IPv4MinimumSize:hl])
	if tcp.SequenceNumber() != r.nextSeq {
		return false
	}
	// Ports, ack, data offset, window, urgent pointer and options: every
	// header byte but seq (4-7), flags (13) and checksum (16-17).
	if !bytes.Equal(htcp[0:4], tcp[0:4]) || !bytes.Equal(htcp[8:13], tcp[8:13]) ||
		!bytes.Equal(htcp[14:16], tcp[14:16]) || !bytes.Equal(htcp[18:], tcp[18:]) {
		return false
	}
	bufs[r.head] = append(bufs[r.head], p[hl:]...)
	if f := tcp.Flags(); f&header.TCPFlagPsh != 0 {
		htcp.SetFlags(uint8(htcp.Flags() | header.TCPFlagPsh))
		r.closed = true
	}
	if payload < r.gsoSize {
		r.closed = true
	}
	r.n++
	r.nextSeq += uint32(payload)
	return true
}

// finish writes the run's headers and returns its packet.
func (r *groRun) finish(bufs [][]byte, offset int) []byte {
	r.active = false
	b := bufs[r.head]
	vh := b[offset-HdrLen : offset]
	clear(vh)
	if r.n == 1 {
		return b
	}
	p := b[offset:]
	ip := header.IPv4(p)
	ip.SetTotalLength(uint16(len(p)))
	ip.SetChecksum(0)
	ip.SetChecksum(^ip.CalculateChecksum())
	tcpLen := len(p) - header.IPv4MinimumSize
	// CHECKSUM_PARTIAL as Linux leaves it: the pseudo-header sum over the
	// whole TCP length; the receiving kernel takes it as verified.
	header.TCP(p[header.IPv4MinimumSize:]).SetChecksum(header.PseudoHeaderChecksum(header.TCPProtocolNumber,
		tcpip.AddrFrom4Slice(ip.SourceAddressSlice()), tcpip.AddrFrom4Slice(ip.DestinationAddressSlice()), uint16(tcpLen)))
	vh[0] = NeedsCsum
	vh[1] = GSOTCPv4
	binary.LittleEndian.PutUint16(vh[2:], uint16(header.IPv4MinimumSize+r.thl))
	binary.LittleEndian.PutUint16(vh[4:], uint16(r.gsoSize))
	binary.LittleEndian.PutUint16(vh[6:], header.IPv4MinimumSize)
	binary.LittleEndian.PutUint16(vh[8:], 16) // offsetof(struct tcphdr, check)
	return b
}

// sameIPv4 reports whether two packets of one run agree on TOS, flags
// (DF), TTL and bytes 12 up to end: both addresses (end 20), and for UDP
// both ports too (end 24). The TCP and UDP merges share it.
func sameIPv4(head, p []byte, end int) bool {
	return head[1] == p[1] && header.IPv4(head).Flags() == header.IPv4(p).Flags() &&
		head[8] == p[8] && bytes.Equal(head[12:end], p[12:end])
}
