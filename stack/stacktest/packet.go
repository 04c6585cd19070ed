package stacktest

import (
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// UDPPacket builds an IPv4/UDP packet with valid checksums, TTL 64 and any
// source, for SendRaw. Both addresses must be IPv4 and the payload must fit
// in one packet (65507 bytes).
func UDPPacket(src, dst netip.AddrPort, payload []byte) []byte {
	b := make([]byte, header.IPv4MinimumSize+header.UDPMinimumSize+len(payload))
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)),
		TTL:         64,
		Protocol:    uint8(header.UDPProtocolNumber),
		SrcAddr:     tcpipAddr(src.Addr()),
		DstAddr:     tcpipAddr(dst.Addr()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	u := header.UDP(b[header.IPv4MinimumSize:])
	u.Encode(&header.UDPFields{SrcPort: src.Port(), DstPort: dst.Port(), Length: uint16(len(u))})
	copy(u[header.UDPMinimumSize:], payload)
	x := header.PseudoHeaderChecksum(header.UDPProtocolNumber, tcpipAddr(src.Addr()), tcpipAddr(dst.Addr()), uint16(len(u)))
	x = checksum.Checksum(payload, x)
	u.SetChecksum(^u.CalculateChecksum(x))
	return b
}
