package stack

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/stack/stacktest"
)

// FuzzEgressDeliver feeds arbitrary bytes from a "container" into a stack
// with egress: the handlers, gVisor and the DNS server must take anything
// without panicking, and every packet the stack sends back must be IPv4
// within the MTU. Nothing leaves the process: AllowLoopback is off, and
// the dial and ping hooks fail every attempt (any other destination would
// otherwise be dialed for real).
func FuzzEgressDeliver(f *testing.F) {
	client := netip.MustParseAddrPort("10.240.0.7:40000")
	f.Add(tcpSYN(client, netip.MustParseAddrPort("198.51.100.1:443"), 7))
	f.Add(tcpSYN(client, netip.MustParseAddrPort("127.0.0.1:22"), 7))
	f.Add(tcpSYN(client, netip.AddrPortFrom(resolver, 80), 7))
	f.Add(stacktest.UDPPacket(client, netip.MustParseAddrPort("198.51.100.1:53"), []byte("query")))
	f.Add(stacktest.UDPPacket(client, netip.MustParseAddrPort("224.0.0.251:5353"), []byte("mdns")))
	f.Add(stacktest.UDPPacket(client, netip.AddrPortFrom(resolver, DNSPort), []byte{0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 'x', 0, 0, 1, 0, 1}))
	f.Add(echoPacket(client.Addr(), netip.MustParseAddr("198.51.100.1"), 1, 1))
	f.Add(echoPacket(client.Addr(), resolver, 1, 1))
	f.Add([]byte{0x45, 0, 0, 20})

	s, err := New(Config{
		Name: "fuzz-egress", Addr: resolver, MTU: 1390, Headroom: router.Headroom, DNS: &echoHandler{},
		Egress: &EgressConfig{DialTimeout: 50 * time.Millisecond, UDPIdleTimeout: 50 * time.Millisecond},
		Output: func(bufs [][]byte, offset int) {
			for _, b := range bufs {
				p := b[offset:]
				if len(p) < 20 || p[0]>>4 != 4 || len(p) > 1390 {
					panic("stack sent a packet that is not IPv4 within the MTU")
				}
			}
		},
	})
	if err != nil {
		f.Fatal(err)
	}
	errNoNet := errors.New("fuzz: no network")
	s.egress.dial = func(context.Context, string, netip.AddrPort) (net.Conn, error) { return nil, errNoNet }
	s.egress.listenPing = func() (net.PacketConn, error) { return nil, errNoNet }
	f.Cleanup(func() { s.Close() })
	f.Fuzz(func(t *testing.T, b []byte) {
		s.Deliver(b)
	})
}

// echoPacket builds an ICMP echo request with valid checksums.
func echoPacket(src, dst netip.Addr, ident, seq uint16) []byte {
	b := make([]byte, header.IPv4MinimumSize+header.ICMPv4MinimumSize+8)
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)),
		TTL:         64,
		Protocol:    uint8(header.ICMPv4ProtocolNumber),
		SrcAddr:     tcpipAddr(src),
		DstAddr:     tcpipAddr(dst),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	m := header.ICMPv4(b[header.IPv4MinimumSize:])
	m.SetType(header.ICMPv4Echo)
	m.SetIdent(ident)
	m.SetSequence(seq)
	copy(m[header.ICMPv4MinimumSize:], "payload!")
	m.SetChecksum(^checksum.Checksum(m, 0))
	return b
}
