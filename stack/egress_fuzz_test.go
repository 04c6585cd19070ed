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

// fuzzPingConn is a ping socket whose only reply is reply, from from.
type fuzzPingConn struct {
	net.PacketConn // nil: only the methods below are called
	reply          []byte
	from           net.Addr
	read           bool
	closed         chan struct{}
}

func (c *fuzzPingConn) WriteTo(b []byte, _ net.Addr) (int, error) { return len(b), nil }
func (c *fuzzPingConn) SetDeadline(time.Time) error               { return nil }
func (c *fuzzPingConn) Close() error {
	select {
	case <-c.closed:
	default:
		close(c.closed)
	}
	return nil
}

func (c *fuzzPingConn) ReadFrom(b []byte) (int, net.Addr, error) {
	if c.read {
		return 0, nil, net.ErrClosed
	}
	c.read = true
	return copy(b, c.reply), c.from, nil
}

// FuzzPingReply: what comes back on a ping socket is chosen by whoever
// answers (or spoofs) the echo request. Any reply must leave the stack
// without a panic, as at most one echo reply to the container, and every
// packet the stack sends must be IPv4 within the MTU.
func FuzzPingReply(f *testing.F) {
	dst := netip.MustParseAddr("198.51.100.1")
	reply := func(typ header.ICMPv4Type, seq uint16, payload int) []byte {
		m := header.ICMPv4(make([]byte, header.ICMPv4MinimumSize+payload))
		m.SetType(typ)
		m.SetIdent(999) // the kernel's "port", not the container's ident
		m.SetSequence(seq)
		m.SetChecksum(^checksum.Checksum(m, 0))
		return m
	}
	f.Add(reply(header.ICMPv4EchoReply, 1, 8))
	f.Add(reply(header.ICMPv4EchoReply, 2, 8))
	f.Add(reply(header.ICMPv4EchoReply, 1, 1500))
	f.Add(reply(header.ICMPv4DstUnreachable, 1, 28))
	f.Add([]byte{0})

	var replies int
	s, err := New(Config{
		Name: "fuzz-ping", Addr: resolver, MTU: 1390, Headroom: router.Headroom,
		Egress: &EgressConfig{DialTimeout: time.Second},
		Output: func(bufs [][]byte, offset int) {
			for _, b := range bufs {
				p := b[offset:]
				if len(p) < 20 || p[0]>>4 != 4 || len(p) > 1390 {
					panic("stack sent a packet that is not IPv4 within the MTU")
				}
				if ip := header.IPv4(p); ip.TransportProtocol() == header.ICMPv4ProtocolNumber && header.ICMPv4(ip.Payload()).Type() == header.ICMPv4EchoReply {
					replies++
				}
			}
		},
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	var conn *fuzzPingConn
	s.egress.listenPing = func() (net.PacketConn, error) { return conn, nil }
	seq := uint16(0)
	ping := func(b []byte) {
		conn = &fuzzPingConn{reply: b, from: &net.UDPAddr{IP: dst.AsSlice()}, closed: make(chan struct{})}
		s.Deliver(echoPacket(netip.MustParseAddr("10.240.0.7"), dst, 1, seq))
	}
	// The harness works: a good reply reaches the container.
	seq = 1
	ping(reply(header.ICMPv4EchoReply, 1, 8))
	<-conn.closed
	s.egress.wg.Wait()
	if replies != 1 || s.EgressStats().PingReplies != 1 {
		f.Fatalf("a valid reply gave %d echo replies (stats %+v)", replies, s.EgressStats())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		seq++
		if len(b) >= header.ICMPv4MinimumSize {
			// Most inputs answer this request's sequence number.
			header.ICMPv4(b).SetSequence(seq)
		}
		before := replies
		ping(b)
		select {
		case <-conn.closed:
		case <-time.After(10 * time.Second):
			t.Fatal("the ping did not end")
		}
		s.egress.wg.Wait() // the ping goroutine is done with replies
		if replies-before > 1 {
			t.Fatalf("%d echo replies for one request", replies-before)
		}
	})
}
