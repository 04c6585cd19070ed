package router

import (
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// icmpMaxSize bounds the ICMP errors the router builds to the 576 bytes
// every IPv4 host must accept (RFC 1812 4.3.2.3: quote as much of the
// offending packet as fits in 576).
const icmpMaxSize = 576

// icmpHeaderSize is the outer IPv4 header (no options) plus the 8-byte ICMP
// header of a destination-unreachable message.
const icmpHeaderSize = header.IPv4MinimumSize + header.ICMPv4MinimumSize

// icmpTTL is the TTL of generated errors (Linux's default).
const icmpTTL = 64

// buildICMPUnreachable writes into b an IPv4 packet carrying an ICMP
// destination-unreachable message with the given code from src about the
// packet orig, and returns its length. For code FragmentationNeeded, mtu is
// the next-hop MTU (RFC 1191). b must hold at least icmpMaxSize bytes. The
// function allocates nothing: it runs on the forwarding path.
func buildICMPUnreachable(b []byte, src [4]byte, orig ipv4Packet, code header.ICMPv4Code, mtu uint16, id uint16) int {
	quote := orig.hdr
	if len(quote) > icmpMaxSize-icmpHeaderSize {
		quote = quote[:icmpMaxSize-icmpHeaderSize]
	}
	total := icmpHeaderSize + len(quote)
	b = b[:total]

	ip := header.IPv4(b)
	b[0] = header.IPv4Version<<4 | header.IPv4MinimumSize/4
	b[1] = 0 // TOS
	ip.SetTotalLength(uint16(total))
	ip.SetID(id)
	ip.SetFlagsFragmentOffset(0, 0)
	ip.SetTTL(icmpTTL)
	b[9] = uint8(header.ICMPv4ProtocolNumber)
	copy(b[12:16], src[:])
	copy(b[16:20], orig.src[:])
	ip.SetChecksum(0)
	ip.SetChecksum(^ip.CalculateChecksum())

	icmp := header.ICMPv4(b[header.IPv4MinimumSize:])
	icmp.SetType(header.ICMPv4DstUnreachable)
	icmp.SetCode(code)
	binary.BigEndian.PutUint16(icmp[4:], 0) // unused
	if code == header.ICMPv4FragmentationNeeded {
		icmp.SetMTU(mtu)
	} else {
		binary.BigEndian.PutUint16(icmp[6:], 0)
	}
	copy(icmp[header.ICMPv4MinimumSize:], quote)
	icmp.SetChecksum(0)
	icmp.SetChecksum(^checksum.Checksum(icmp, 0))
	return total
}
