package stacktest

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// echoPacket builds an IPv4 ICMP echo request as gVisor sends it.
func echoPacket(src, dst netip.Addr, ident, seq uint16) []byte {
	b := make([]byte, header.IPv4MinimumSize+header.ICMPv4MinimumSize+16)
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)),
		TTL:         64,
		Protocol:    uint8(header.ICMPv4ProtocolNumber),
		SrcAddr:     tcpipAddr(src),
		DstAddr:     tcpipAddr(dst),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	icmp := header.ICMPv4(b[header.IPv4MinimumSize:])
	icmp.SetType(header.ICMPv4Echo)
	icmp.SetIdent(ident)
	icmp.SetSequence(seq)
	return b
}

func TestParseUnreachable(t *testing.T) {
	me := netip.MustParseAddr("10.240.0.1")
	dst := netip.MustParseAddr("10.240.1.99")
	echo := echoPacket(me, dst, 0x1234, 7)
	udp := UDPPacket(netip.AddrPortFrom(me, 1), netip.AddrPortFrom(dst, 2), []byte("x"))

	tests := []struct {
		name string
		pkt  []byte
		want unreachable
		ok   bool
	}{
		{
			name: "host unreachable quoting an echo",
			pkt:  icmpError(resolverAddr, me, header.ICMPv4HostUnreachable, echo[:28]),
			want: unreachable{from: resolverAddr, origSrc: me, origDst: dst, code: 1, ident: 0x1234},
			ok:   true,
		},
		{
			name: "net unreachable quoting the whole echo",
			pkt:  icmpError(resolverAddr, me, header.ICMPv4NetUnreachable, echo),
			want: unreachable{from: resolverAddr, origSrc: me, origDst: dst, code: 0, ident: 0x1234},
			ok:   true,
		},
		{name: "quotes udp", pkt: icmpError(resolverAddr, me, header.ICMPv4HostUnreachable, udp[:28])},
		{name: "quote too short", pkt: icmpError(resolverAddr, me, header.ICMPv4HostUnreachable, echo[:24])},
		{name: "echo request itself", pkt: echo},
		{name: "not icmp", pkt: udp},
		{name: "empty", pkt: nil},
		{name: "truncated outer header", pkt: echo[:10]},
		{name: "total length beyond packet", pkt: func() []byte {
			b := icmpError(resolverAddr, me, header.ICMPv4HostUnreachable, echo[:28])
			binary.BigEndian.PutUint16(b[2:], uint16(len(b)+1))
			return b
		}()},
		{name: "quoted ihl too small", pkt: func() []byte {
			q := append([]byte(nil), echo[:28]...)
			q[0] = 0x44
			return icmpError(resolverAddr, me, header.ICMPv4HostUnreachable, q)
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseUnreachable(tt.pkt)
			if ok != tt.ok || got != tt.want {
				t.Errorf("parseUnreachable = %+v, %v; want %+v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func FuzzParseUnreachable(f *testing.F) {
	me := netip.MustParseAddr("10.240.0.1")
	echo := echoPacket(me, netip.MustParseAddr("10.240.1.99"), 1, 1)
	f.Add(icmpError(resolverAddr, me, header.ICMPv4HostUnreachable, echo[:28]))
	f.Add(echo)
	f.Add([]byte{0x45})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		u, ok := parseUnreachable(pkt)
		if !ok && u != (unreachable{}) {
			t.Errorf("not ok but returned %+v", u)
		}
		// The Port.Write path must cope with the same bytes.
		var w pingWatch
		w.init()
		w.watch(pingKey{dst: u.origDst, ident: u.ident})
		w.observe(pkt)
	})
}
