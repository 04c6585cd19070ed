// Package offload reads virtio-net headers and does in userspace what a
// TUN with IFF_VNET_HDR and TSO leaves to the device: completing partial
// checksums and segmenting TCP super-packets. The router uses it for
// super-packets that cannot go out whole, the TUN port for plain reads.
package offload

import (
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// HdrLen is the size of struct virtio_net_hdr (without num_buffers).
const HdrLen = 10

// virtio_net_hdr constants (include/uapi/linux/virtio_net.h).
const (
	NeedsCsum = 1    // VIRTIO_NET_HDR_F_NEEDS_CSUM
	GSONone   = 0    // VIRTIO_NET_HDR_GSO_NONE
	GSOTCPv4  = 1    // VIRTIO_NET_HDR_GSO_TCPV4
	GSOECN    = 0x80 // VIRTIO_NET_HDR_GSO_ECN
)

// Hdr is a decoded virtio_net_hdr. The fields are in host byte order on
// the wire (little endian on every platform we run on).
type Hdr struct {
	Flags      uint8
	GSOType    uint8
	HdrLen     uint16
	GSOSize    uint16
	CsumStart  uint16
	CsumOffset uint16
}

// Decode reads the header in b[:HdrLen].
func Decode(b []byte) Hdr {
	_ = b[HdrLen-1]
	return Hdr{
		Flags:      b[0],
		GSOType:    b[1],
		HdrLen:     binary.LittleEndian.Uint16(b[2:]),
		GSOSize:    binary.LittleEndian.Uint16(b[4:]),
		CsumStart:  binary.LittleEndian.Uint16(b[6:]),
		CsumOffset: binary.LittleEndian.Uint16(b[8:]),
	}
}

// Plain reports whether the packet is complete as it is: not a
// super-packet and with its checksum computed.
func (h Hdr) Plain() bool {
	return h.GSO() == GSONone && h.Flags&NeedsCsum == 0
}

// GSO is the segmentation type without the ECN bit.
func (h Hdr) GSO() uint8 { return h.GSOType &^ GSOECN }

// SegmentLen is the largest IP packet the TCP super-packet pkt splits into.
func SegmentLen(pkt header.IPv4, h Hdr) int {
	return int(pkt.HeaderLength()) + tcpHeaderLen(pkt) + int(h.GSOSize)
}

// tcpHeaderLen returns the TCP header length of an IPv4 packet, 0 if it is
// not a TCP packet with a sane header.
func tcpHeaderLen(pkt header.IPv4) int {
	if pkt.TransportProtocol() != header.TCPProtocolNumber {
		return 0
	}
	ihl := int(pkt.HeaderLength())
	if len(pkt) < ihl+header.TCPMinimumSize {
		return 0
	}
	n := int(header.TCP(pkt[ihl:]).DataOffset())
	if n < header.TCPMinimumSize || len(pkt) < ihl+n {
		return 0
	}
	return n
}

// CompleteChecksum computes the transport checksum the sender left to the
// device (NEEDS_CSUM): the 16-bit one's complement sum from csumStart to
// the end, which the sender seeded with the pseudo-header sum, stored at
// csumStart+csumOffset. It reports false if the offsets are outside pkt.
func CompleteChecksum(pkt []byte, h Hdr) bool {
	start, off := int(h.CsumStart), int(h.CsumOffset)
	if start >= len(pkt) || start+off+2 > len(pkt) {
		return false
	}
	sum := checksum.Checksum(pkt[start:], 0)
	binary.BigEndian.PutUint16(pkt[start+off:], ^sum)
	return true
}

// SplitTCP segments the TCP/IPv4 super-packet pkt into packets of at most
// gsoSize payload bytes, as the kernel's tcp_gso_segment would: each
// segment gets the IP and TCP headers, its own total length, IP ID (the
// first's plus the index), sequence number and checksums; FIN and PSH stay
// only on the last segment, CWR only on the first. It makes segments
// first, first+1, … (as many as fit in out; segment first+k at
// out[k][offset:], its length in sizes[k]) and returns how many it made
// and how many there are in all; every out[k] must have room for
// offset+SegmentLen. n is -1 if pkt is not a well-formed TCP/IPv4
// super-packet.
func SplitTCP(pkt header.IPv4, gsoSize, first int, out [][]byte, sizes []int, offset int) (n, total int) {
	ihl := int(pkt.HeaderLength())
	thl := tcpHeaderLen(pkt)
	if thl == 0 || gsoSize <= 0 || pkt.FragmentOffset() != 0 || pkt.More() {
		return -1, 0
	}
	hl := ihl + thl
	total = max((len(pkt)-hl+gsoSize-1)/gsoSize, 1) // a bare header with GSO set: one packet
	if first < 0 || first >= total {
		return -1, total
	}
	id := pkt.ID()
	seq := header.TCP(pkt[ihl:]).SequenceNumber()
	flags := header.TCP(pkt[ihl:]).Flags()
	src := tcpip.AddrFrom4Slice(pkt.SourceAddressSlice())
	dst := tcpip.AddrFrom4Slice(pkt.DestinationAddressSlice())
	for n = 0; n < len(out) && first+n < total; n++ {
		k := first + n
		lo := hl + k*gsoSize
		hi := min(lo+gsoSize, len(pkt))
		seg := out[n][offset:]
		if len(seg) < hl+(hi-lo) {
			return -1, total
		}
		copy(seg, pkt[:hl])
		seg = seg[:hl+copy(seg[hl:], pkt[lo:hi])]

		ip := header.IPv4(seg)
		ip.SetTotalLength(uint16(len(seg)))
		ip.SetID(id + uint16(k))
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())

		tcp := header.TCP(seg[ihl:])
		tcp.SetSequenceNumber(seq + uint32(k*gsoSize))
		f := flags
		if k != total-1 {
			f &^= header.TCPFlagFin | header.TCPFlagPsh
		}
		if k != 0 {
			f &^= header.TCPFlagCwr
		}
		tcp.SetFlags(uint8(f))
		tcp.SetChecksum(0)
		sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(seg)-ihl))
		tcp.SetChecksum(^checksum.Checksum(seg[ihl:], sum))
		sizes[n] = len(seg)
	}
	return n, total
}
