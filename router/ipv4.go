package router

import "gvisor.dev/gvisor/pkg/tcpip/header"

// ipv4Packet is a validated view of one IPv4 packet inside a port buffer.
// It holds no copy of the packet; the addresses are copied into arrays so
// that comparisons and table lookups need neither netip nor allocation.
type ipv4Packet struct {
	hdr      header.IPv4 // the whole packet, trimmed to the header's total length
	src, dst [4]byte
}

// parseIPv4 checks that b starts with a sane IPv4 header and returns a view
// of it. The header checksum is not verified: packets come from the kernel
// of the container's namespace, which computed it, and a bad checksum only
// harms the sender. Lengths are checked because the router slices by them.
// Bytes after the header's total length (padding) are not part of the
// packet and are cut off.
func parseIPv4(b []byte) (ipv4Packet, counter, bool) {
	if len(b) == 0 {
		return ipv4Packet{}, dropMalformed, false
	}
	if header.IPVersion(b) != header.IPv4Version {
		return ipv4Packet{}, dropNotIPv4, false
	}
	h := header.IPv4(b)
	if !h.IsValid(len(b)) {
		return ipv4Packet{}, dropMalformed, false
	}
	p := ipv4Packet{hdr: h[:h.TotalLength()]}
	copy(p.src[:], h.SourceAddressSlice())
	copy(p.dst[:], h.DestinationAddressSlice())
	return p, 0, true
}

// dontFragment reports whether the sender forbade fragmentation.
func (p ipv4Packet) dontFragment() bool {
	return p.hdr.Flags()&header.IPv4FlagDontFragment != 0
}

// mayTriggerICMPError applies RFC 1122 3.2.2 and RFC 1812 4.3.2.7: no ICMP
// error about an ICMP error, and none about a fragment other than the
// first (the sender would get one per fragment). Destination broadcast and
// multicast packets never reach the code that sends errors.
func (p ipv4Packet) mayTriggerICMPError() bool {
	if p.hdr.FragmentOffset() != 0 {
		return false
	}
	if p.hdr.Protocol() != uint8(header.ICMPv4ProtocolNumber) {
		return true
	}
	payload := p.hdr[p.hdr.HeaderLength():]
	if len(payload) == 0 {
		return false // cannot tell what it is: stay quiet
	}
	switch header.ICMPv4Type(payload[0]) {
	case header.ICMPv4DstUnreachable, header.ICMPv4SrcQuench, header.ICMPv4Redirect,
		header.ICMPv4TimeExceeded, header.ICMPv4ParamProblem:
		return false
	}
	return true
}

// totalLen is the packet's length in bytes as the header declares it.
func (p ipv4Packet) totalLen() int { return len(p.hdr) }
