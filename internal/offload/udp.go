package offload

import (
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// GSOUDPL4 is VIRTIO_NET_HDR_GSO_UDP_L4: a UDP super-packet that the
// kernel cuts into datagrams of GSOSize payload bytes (USO).
const GSOUDPL4 = 5

// maxUDPSegments bounds the datagrams of one UDP super-packet: the
// kernel's UDP_MAX_SEGMENTS was 64 before 6.x raised it to 128.
const maxUDPSegments = 64

// udpCsumOffset is offsetof(struct udphdr, check).
const udpCsumOffset = 6

// CoalesceUDP merges, for a write to a TUN with IFF_VNET_HDR, runs of
// consecutive UDP/IPv4 datagrams of one flow into UDP super-packets (GSO
// UDP_L4). A TUN write is one packet per write(2): a container that
// streams small datagrams then costs one system call per run instead of
// one per datagram, and the receiving kernel splits the run again before
// any socket sees it, so the datagrams arrive as they were sent.
//
// Packet i is bufs[i][offset:] with its virtio-net header at
// [offset-HdrLen:offset] (a zero header: a plain packet). Packets that
// are not mergeable UDP keep their header and are written as they are.
// A datagram joins the run of the one before it if it has the same
// addresses, ports, TOS, TTL and DF (set, or IP IDs that follow each
// other, as the kernel's segmentation numbers them), a payload of the
// run's size (a shorter one ends the run) and a checksum that is either
// left to the device (NEEDS_CSUM at the UDP checksum) or valid. It is
// appended into the spare capacity of the run's first buffer, so only
// buffers with room beyond their length absorb others.
//
// It returns out with the packets to write and changes bufs in place.
func CoalesceUDP(bufs [][]byte, offset int, out [][]byte) [][]byte {
	var run udpRun
	for i := range bufs {
		if run.active && run.add(bufs, i, offset) {
			continue
		}
		if run.active {
			out = append(out, run.finish(bufs, offset))
		}
		if run.start(bufs, i, offset) {
			continue
		}
		out = append(out, bufs[i])
	}
	if run.active {
		out = append(out, run.finish(bufs, offset))
	}
	return out
}

// udpRun is the UDP super-packet being built.
type udpRun struct {
	head    int // index in bufs of the first datagram
	n       int // datagrams in the run
	gsoSize int // payload of the first datagram
	nextID  uint16
	closed  bool // a shorter datagram ended it
	active  bool
}

// datagram returns the payload length of a mergeable UDP/IPv4 datagram
// whose virtio-net header is vh, or ok false.
func datagram(vh, p []byte) (payload int, ok bool) {
	const hl = header.IPv4MinimumSize + header.UDPMinimumSize
	if len(p) <= hl || len(vh) < HdrLen {
		return 0, false
	}
	ip := header.IPv4(p)
	// No IP options, not a fragment.
	if p[0] != 0x45 || int(ip.TotalLength()) != len(p) || ip.Protocol() != uint8(header.UDPProtocolNumber) ||
		ip.More() || ip.FragmentOffset() != 0 {
		return 0, false
	}
	udp := header.UDP(p[header.IPv4MinimumSize:])
	if int(udp.Length()) != len(p)-header.IPv4MinimumSize {
		return 0, false
	}
	h := Decode(vh)
	switch {
	case h.GSO() != GSONone:
		return 0, false
	case h.Flags&NeedsCsum != 0:
		// The sender left the checksum to the device: the receiving
		// kernel treats it as verified, merged or not.
		if h.CsumStart != header.IPv4MinimumSize || h.CsumOffset != udpCsumOffset {
			return 0, false
		}
	case h.Flags != 0:
		return 0, false
	default:
		// A complete checksum that merging would hide: check it, as the
		// kernel's GRO would have. Zero is "no checksum".
		if ip.CalculateChecksum() != 0xffff {
			return 0, false
		}
		if udp.Checksum() != 0 {
			sum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), udp.Length())
			if checksum.Checksum(p[header.IPv4MinimumSize:], sum) != 0xffff {
				return 0, false
			}
		}
	}
	return len(p) - hl, true
}

func (r *udpRun) start(bufs [][]byte, i, offset int) bool {
	p := bufs[i][offset:]
	payload, ok := datagram(bufs[i][offset-HdrLen:offset], p)
	if !ok {
		return false
	}
	*r = udpRun{head: i, n: 1, gsoSize: payload, nextID: header.IPv4(p).ID() + 1, active: true}
	return true
}

// add appends datagram i to the run if it continues it and fits.
func (r *udpRun) add(bufs [][]byte, i, offset int) bool {
	if r.closed || r.n == maxUDPSegments {
		return false
	}
	head := bufs[r.head][offset:]
	p := bufs[i][offset:]
	payload, ok := datagram(bufs[i][offset-HdrLen:offset], p)
	if !ok || payload > r.gsoSize {
		return false
	}
	if len(head)+payload > 65535 || cap(bufs[r.head])-offset-len(head) < payload {
		return false
	}
	if !sameIPv4(head, p, 24) {
		return false
	}
	hip, ip := header.IPv4(head), header.IPv4(p)
	if hip.Flags()&header.IPv4FlagDontFragment == 0 && ip.ID() != r.nextID {
		return false
	}
	const hl = header.IPv4MinimumSize + header.UDPMinimumSize
	bufs[r.head] = append(bufs[r.head], p[hl:]...)
	if payload < r.gsoSize {
		r.closed = true
	}
	r.n++
	r.nextID++
	return true
}

// finish writes the run's headers and returns its packet. A run of one
// is the datagram as it came, header included.
func (r *udpRun) finish(bufs [][]byte, offset int) []byte {
	r.active = false
	b := bufs[r.head]
	if r.n == 1 {
		return b
	}
	p := b[offset:]
	ip := header.IPv4(p)
	ip.SetTotalLength(uint16(len(p)))
	ip.SetChecksum(0)
	ip.SetChecksum(^ip.CalculateChecksum())
	udpLen := uint16(len(p) - header.IPv4MinimumSize)
	udp := header.UDP(p[header.IPv4MinimumSize:])
	udp.SetLength(udpLen)
	// CHECKSUM_PARTIAL: the pseudo-header sum over the whole length; the
	// kernel's segmentation adjusts it for each datagram.
	udp.SetChecksum(header.PseudoHeaderChecksum(header.UDPProtocolNumber,
		tcpip.AddrFrom4Slice(ip.SourceAddressSlice()), tcpip.AddrFrom4Slice(ip.DestinationAddressSlice()), udpLen))
	vh := b[offset-HdrLen : offset]
	vh[0] = NeedsCsum
	vh[1] = GSOUDPL4
	binary.LittleEndian.PutUint16(vh[2:], header.IPv4MinimumSize+header.UDPMinimumSize)
	binary.LittleEndian.PutUint16(vh[4:], uint16(r.gsoSize))
	binary.LittleEndian.PutUint16(vh[6:], header.IPv4MinimumSize)
	binary.LittleEndian.PutUint16(vh[8:], udpCsumOffset)
	return b
}
