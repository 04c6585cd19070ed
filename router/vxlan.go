package router

import (
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// VXLAN framing between nodes (RFC 7348), so that a capture of the
// decrypted overlay decodes in standard tools:
//
//	IPv4 (20, no options, DF, proto UDP, overlay src → overlay dst)
//	UDP  (8, src port = hash of the inner flow in 49152–65535, dst 4789, checksum 0)
//	VXLAN(8, flags 0x08, 24-bit VNI)
//	Ethernet (14, MACs 02:00:<inner IPv4>, type 0x0800, no FCS)
//	inner IPv4 packet
const (
	// VXLANPort is the IANA VXLAN port, the outer UDP destination.
	VXLANPort = 4789
	// VXLANOverhead is what encapsulation adds in front of an inner packet.
	VXLANOverhead = header.IPv4MinimumSize + header.UDPMinimumSize + vxlanHeaderSize + header.EthernetMinimumSize

	vxlanHeaderSize = 8
	vxlanFlagVNI    = 0x08 // the I flag: the VNI field is valid
	vxlanTTL        = 64

	offUDP   = header.IPv4MinimumSize
	offVXLAN = offUDP + header.UDPMinimumSize
	offEth   = offVXLAN + vxlanHeaderSize
)

// vxlanFrame is a decoded overlay frame. inner aliases the decoded buffer.
type vxlanFrame struct {
	src, dst [4]byte // outer (overlay) addresses
	vni      uint32
	inner    []byte // the inner IPv4 packet, not yet validated
}

// encodeVXLAN fills frame[:VXLANOverhead] with the outer headers of the
// inner IPv4 packet at frame[VXLANOverhead:], which must be at least an
// IPv4 header long (the forwarding path has validated it). src and dst are
// the overlay addresses of this node and of the destination node. It
// allocates nothing.
func encodeVXLAN(frame []byte, src, dst [4]byte, vni uint32) {
	inner := frame[VXLANOverhead:]
	be := binary.BigEndian

	ip := frame[:header.IPv4MinimumSize]
	ip[0] = header.IPv4Version<<4 | header.IPv4MinimumSize/4
	ip[1] = 0
	be.PutUint16(ip[2:], uint16(len(frame)))
	be.PutUint16(ip[4:], 0) // ID: atomic datagram (DF, never fragmented), RFC 6864
	be.PutUint16(ip[6:], uint16(header.IPv4FlagDontFragment)<<13)
	ip[8] = vxlanTTL
	ip[9] = uint8(header.UDPProtocolNumber)
	be.PutUint16(ip[10:], 0)
	copy(ip[12:16], src[:])
	copy(ip[16:20], dst[:])
	be.PutUint16(ip[10:], ^checksum.Checksum(ip, 0))

	u := frame[offUDP:offVXLAN]
	be.PutUint16(u[0:], flowPort(inner))
	be.PutUint16(u[2:], VXLANPort)
	be.PutUint16(u[4:], uint16(len(frame)-offUDP))
	be.PutUint16(u[6:], 0) // no checksum over IPv4 (RFC 7348 5); WireGuard authenticates

	v := frame[offVXLAN:offEth]
	be.PutUint32(v[0:], vxlanFlagVNI<<24)
	be.PutUint32(v[4:], vni<<8)

	e := frame[offEth:VXLANOverhead]
	e[0], e[1] = 0x02, 0x00 // locally administered unicast
	copy(e[2:6], inner[16:20])
	e[6], e[7] = 0x02, 0x00
	copy(e[8:12], inner[12:16])
	be.PutUint16(e[12:], uint16(header.IPv4ProtocolNumber))
}

// flowPort hashes the inner flow (addresses, protocol and, for the first
// fragment of TCP/UDP, the ports) into the dynamic port range, so that
// ECMP and RSS on the underlay spread flows but keep each one in order.
func flowPort(inner []byte) uint16 {
	const prime = 16777619
	h := uint32(2166136261) // FNV-1a
	for _, b := range inner[12:20] {
		h = (h ^ uint32(b)) * prime
	}
	proto := inner[9]
	h = (h ^ uint32(proto)) * prime
	ihl := int(inner[0]&0xf) * 4
	fragOff := binary.BigEndian.Uint16(inner[6:]) & 0x1fff
	if (proto == uint8(header.TCPProtocolNumber) || proto == uint8(header.UDPProtocolNumber)) &&
		fragOff == 0 && ihl >= header.IPv4MinimumSize && len(inner) >= ihl+4 {
		for _, b := range inner[ihl : ihl+4] {
			h = (h ^ uint32(b)) * prime
		}
	}
	return 49152 | uint16(h^h>>16)&0x3fff
}

// decodeVXLAN validates every layer of an overlay frame as encodeVXLAN
// writes it and returns the outer addresses, the VNI and the inner packet.
// It rejects outer IP options and fragments (VTEPs never fragment), a
// wrong header checksum, anything but UDP to VXLANPort with a consistent
// length, a VXLAN header without the I flag, and inner frames that are not
// untagged IPv4. Bytes after the outer total length are ignored. It
// allocates nothing and never panics, whatever b holds.
func decodeVXLAN(b []byte) (vxlanFrame, bool) {
	be := binary.BigEndian
	if len(b) < VXLANOverhead || b[0] != header.IPv4Version<<4|header.IPv4MinimumSize/4 {
		return vxlanFrame{}, false
	}
	total := int(be.Uint16(b[2:]))
	if total < VXLANOverhead || total > len(b) {
		return vxlanFrame{}, false
	}
	b = b[:total]
	if be.Uint16(b[6:])&0x3fff != 0 || b[9] != uint8(header.UDPProtocolNumber) {
		return vxlanFrame{}, false // MF or fragment offset set, or not UDP
	}
	if checksum.Checksum(b[:header.IPv4MinimumSize], 0) != 0xffff {
		return vxlanFrame{}, false
	}
	if be.Uint16(b[offUDP+2:]) != VXLANPort || int(be.Uint16(b[offUDP+4:])) != total-offUDP {
		return vxlanFrame{}, false
	}
	// Reserved bits are ignored on receipt (RFC 7348 5); the I flag is not.
	if b[offVXLAN]&vxlanFlagVNI == 0 {
		return vxlanFrame{}, false
	}
	if be.Uint16(b[offEth+12:]) != uint16(header.IPv4ProtocolNumber) {
		return vxlanFrame{}, false
	}
	var f vxlanFrame
	copy(f.src[:], b[12:16])
	copy(f.dst[:], b[16:20])
	f.vni = be.Uint32(b[offVXLAN+4:]) >> 8
	f.inner = b[VXLANOverhead:]
	return f, true
}
