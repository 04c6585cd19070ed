// Package offloadtest builds the packets a TUN with IFF_VNET_HDR and TSO
// hands to userspace, for tests of the code that takes them apart.
package offloadtest

import (
	"encoding/binary"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TCP describes a TCP/IPv4 packet.
type TCP struct {
	Src, Dst string // IPv4 addresses
	Seq      uint32
	Flags    header.TCPFlags // 0: ACK|PSH
	Payload  int             // bytes, filled with a counting pattern
	ID       uint16
}

// Super returns a TCP super-packet as the kernel writes it into a vnet_hdr
// TUN: the virtio-net header (GSO TCPv4, gso_size mss, NEEDS_CSUM with the
// pseudo-header sum in the checksum field) and the packet with the full
// total length.
func Super(t TCP, mss int) (hdr [10]byte, pkt []byte) {
	pkt = Packet(t)
	ihl := header.IPv4MinimumSize
	tcp := header.TCP(pkt[ihl:])
	s, d := netip.MustParseAddr(t.Src).As4(), netip.MustParseAddr(t.Dst).As4()
	// Partial checksum as Linux leaves it for CHECKSUM_PARTIAL
	// (__tcp_v4_send_check): the pseudo-header sum over the whole
	// super-packet's TCP length; the device adds the rest.
	tcp.SetChecksum(header.PseudoHeaderChecksum(header.TCPProtocolNumber, tcpip.AddrFrom4(s), tcpip.AddrFrom4(d), uint16(len(pkt)-ihl)))
	hdr[0] = 1 // NEEDS_CSUM
	hdr[1] = 1 // GSO_TCPV4
	binary.LittleEndian.PutUint16(hdr[2:], uint16(ihl+header.TCPMinimumSize))
	binary.LittleEndian.PutUint16(hdr[4:], uint16(mss))
	binary.LittleEndian.PutUint16(hdr[6:], uint16(ihl))
	binary.LittleEndian.PutUint16(hdr[8:], 16) // offsetof(tcphdr, check)
	return hdr, pkt
}

// Partial returns a plain TCP packet whose checksum is left to the device
// (NEEDS_CSUM, no GSO), and its header.
func Partial(t TCP) (hdr [10]byte, pkt []byte) {
	hdr, pkt = Super(t, 0)
	hdr[1] = 0
	binary.LittleEndian.PutUint16(hdr[4:], 0)
	return hdr, pkt
}

// Packet returns a complete TCP/IPv4 packet with valid checksums.
func Packet(t TCP) []byte {
	ihl := header.IPv4MinimumSize
	pkt := make([]byte, ihl+header.TCPMinimumSize+t.Payload)
	s, d := netip.MustParseAddr(t.Src).As4(), netip.MustParseAddr(t.Dst).As4()
	ip := header.IPv4(pkt)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(pkt)), ID: t.ID, Flags: header.IPv4FlagDontFragment,
		TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(s), DstAddr: tcpip.AddrFrom4(d),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	flags := t.Flags
	if flags == 0 {
		flags = header.TCPFlagAck | header.TCPFlagPsh
	}
	tcp := header.TCP(pkt[ihl:])
	tcp.Encode(&header.TCPFields{
		SrcPort: 40000, DstPort: 5201, SeqNum: t.Seq, AckNum: 1,
		DataOffset: header.TCPMinimumSize, Flags: flags, WindowSize: 65535,
	})
	for i := range t.Payload {
		pkt[ihl+header.TCPMinimumSize+i] = byte(i)
	}
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, tcpip.AddrFrom4(s), tcpip.AddrFrom4(d), uint16(len(pkt)-ihl))
	tcp.SetChecksum(^checksum.Checksum(pkt[ihl:], sum))
	return pkt
}

// Valid reports whether pkt is a TCP/IPv4 packet whose IP and TCP
// checksums are right.
func Valid(pkt []byte) bool {
	if len(pkt) < header.IPv4MinimumSize {
		return false
	}
	ip := header.IPv4(pkt)
	if !ip.IsValid(len(pkt)) || int(ip.TotalLength()) != len(pkt) || ip.CalculateChecksum() != 0xffff {
		return false
	}
	ihl := int(ip.HeaderLength())
	if len(pkt) < ihl+header.TCPMinimumSize {
		return false
	}
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(pkt)-ihl))
	return checksum.Checksum(pkt[ihl:], sum) == 0xffff
}

// UDP describes a UDP/IPv4 datagram.
type UDP struct {
	Src, Dst         string // IPv4 addresses
	SrcPort, DstPort uint16 // 0: 40000 and 5201
	Payload          int    // bytes, filled with a counting pattern from Fill
	Fill             byte
	ID               uint16
	NoDF             bool // clear DF
}

// UDPPacket returns a complete UDP/IPv4 datagram with valid checksums.
func UDPPacket(u UDP) []byte {
	ihl := header.IPv4MinimumSize
	pkt := make([]byte, ihl+header.UDPMinimumSize+u.Payload)
	s, d := netip.MustParseAddr(u.Src).As4(), netip.MustParseAddr(u.Dst).As4()
	var flags uint8 = header.IPv4FlagDontFragment
	if u.NoDF {
		flags = 0
	}
	ip := header.IPv4(pkt)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(pkt)), ID: u.ID, Flags: flags,
		TTL: 64, Protocol: uint8(header.UDPProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(s), DstAddr: tcpip.AddrFrom4(d),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	sp, dp := u.SrcPort, u.DstPort
	if sp == 0 {
		sp = 40000
	}
	if dp == 0 {
		dp = 5201
	}
	udp := header.UDP(pkt[ihl:])
	udp.Encode(&header.UDPFields{SrcPort: sp, DstPort: dp, Length: uint16(len(pkt) - ihl)})
	for i := range u.Payload {
		pkt[ihl+header.UDPMinimumSize+i] = u.Fill + byte(i)
	}
	sum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, tcpip.AddrFrom4(s), tcpip.AddrFrom4(d), uint16(len(pkt)-ihl))
	udp.SetChecksum(^checksum.Checksum(pkt[ihl:], sum))
	return pkt
}

// UDPPartial returns a datagram as a sender that leaves the checksum to
// the device writes it (NEEDS_CSUM, the pseudo-header sum in the checksum
// field), and its virtio-net header.
func UDPPartial(u UDP) (hdr [10]byte, pkt []byte) {
	pkt = UDPPacket(u)
	ihl := header.IPv4MinimumSize
	ip := header.IPv4(pkt)
	header.UDP(pkt[ihl:]).SetChecksum(header.PseudoHeaderChecksum(header.UDPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(pkt)-ihl)))
	hdr[0] = 1 // NEEDS_CSUM
	binary.LittleEndian.PutUint16(hdr[6:], uint16(ihl))
	binary.LittleEndian.PutUint16(hdr[8:], 6) // offsetof(udphdr, check)
	return hdr, pkt
}

// ValidUDP reports whether pkt is a UDP/IPv4 datagram whose IP and UDP
// checksums are right (a zero UDP checksum is none, and right).
func ValidUDP(pkt []byte) bool {
	if len(pkt) < header.IPv4MinimumSize+header.UDPMinimumSize {
		return false
	}
	ip := header.IPv4(pkt)
	if !ip.IsValid(len(pkt)) || int(ip.TotalLength()) != len(pkt) || ip.CalculateChecksum() != 0xffff {
		return false
	}
	udp := header.UDP(pkt[header.IPv4MinimumSize:])
	if int(udp.Length()) != len(pkt)-header.IPv4MinimumSize {
		return false
	}
	if udp.Checksum() == 0 {
		return true
	}
	sum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), udp.Length())
	return checksum.Checksum(pkt[header.IPv4MinimumSize:], sum) == 0xffff
}
