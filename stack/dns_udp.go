package stack

// The UDP fast path of the resolver: a query to Addr:53 over UDP is parsed
// and answered on the goroutine that delivers it, and the answer is built
// as an IPv4/UDP packet and handed to Output, without gVisor and without a
// goroutine per query. Through gVisor and miekg's server (a gonet
// PacketConn, one goroutine per packet, a route lookup per answer) a query
// cost about 45 µs of the daemon's CPU; most of it was gVisor's socket
// layer, the goroutine's stack growing through that deep path, and the
// write path's route lookup.
//
//	Stack.Deliver → dnsUDP.deliver: IPv4 without options or fragments, UDP
//	  to port 53 with a valid checksum (anything else: gVisor as before)
//	  → miekg's accept rules (DefaultMsgAcceptFunc, as its server applies
//	    them) → Handler.ServeDNSNow on the delivering goroutine; what needs
//	    an upstream goes to ServeDNSAsync (written upstream from here, the
//	    answer written from the resolver's socket reader), or, when that
//	    declines (a flight to join), to ServeDNS on a goroutine of its own
//	    (bounded)
//	  → udpResponse.WriteMsg → IPv4/UDP packet → Config.Output
//
// Answers look as gVisor's did (TTL 64, DF, ID 0). One larger than the MTU
// goes out through the gVisor socket, which fragments it as before.
// Fragmented queries, IP options and bad checksums take the gVisor path,
// where miekg's UDP server still listens, so nothing that was answered
// before goes unanswered.

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	mdns "github.com/miekg/dns"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/dns"
)

// NowHandler is a DNS handler that can tell the queries it answers without
// blocking (dns.Resolver's handlers are): ServeDNSNow answers req and
// returns true, or writes nothing and returns false when ServeDNS would
// block (an upstream exchange).
type NowHandler interface {
	mdns.Handler
	ServeDNSNow(w mdns.ResponseWriter, req *mdns.Msg) bool
}

// AsyncHandler is a DNS handler that forwards without blocking
// (dns.Resolver's handlers do): ServeDNSAsync either takes the query,
// answers it later from another goroutine and then calls w.Done, or
// returns false having kept nothing, and ServeDNS must serve it.
type AsyncHandler interface {
	ServeDNSAsync(w dns.AsyncWriter, req *mdns.Msg) bool
}

// QueryGate is a DNS handler that shares the resolver's query rate among
// networks (dns.Resolver's handlers do): the fast path asks it before it
// unpacks a query, so that a refused query costs its parse and checksum
// only, and a REFUSED answer is built from the query's own bytes.
type QueryGate interface {
	AdmitQuery() dns.Admission
}

// maxSlowDNS bounds the goroutines of UDP queries waiting for an upstream.
// The resolver's own in-flight bounds (dns.DefaultMaxInflight) are far
// lower and answer SERVFAIL beyond them at once, so this only stops a
// handler without such bounds from piling up goroutines.
const maxSlowDNS = 1024

// dnsHeaderLen is the DNS header; miekg's server drops shorter messages.
const dnsHeaderLen = 12

const udpIPv4HeaderLen = header.IPv4MinimumSize + header.UDPMinimumSize

type dnsUDP struct {
	addr     tcpip.Address // the resolver
	local    *net.UDPAddr  // the resolver, port 53, as handlers see it
	mtu      int
	headroom int
	output   func([][]byte, int)
	out      sync.Pool // *udpOut
	resp     sync.Pool // *udpResponse
	// pc is the gVisor socket on the resolver's port: answers larger than
	// the MTU go through it to be fragmented.
	pc net.PacketConn

	h     mdns.Handler
	now   NowHandler   // nil: h answers every query on a goroutine
	async AsyncHandler // nil: what now does not answer goes to a goroutine
	gate  QueryGate    // nil: every query is served

	slow chan struct{} // a slot per goroutine of a query that may block
	wg   sync.WaitGroup

	queries, answers, drops atomic.Uint64
}

// udpOut is one answer packet being written: the buffer and the slice
// Output takes, pooled together so that answering allocates neither.
type udpOut struct {
	buf  []byte
	list [1][]byte
}

func newDNSUDP(addr netip.Addr, mtu, headroom int, output func([][]byte, int), pc net.PacketConn, h mdns.Handler) *dnsUDP {
	d := &dnsUDP{
		addr:     tcpip.AddrFrom4(addr.As4()),
		local:    &net.UDPAddr{IP: addr.AsSlice(), Port: DNSPort},
		mtu:      mtu,
		headroom: headroom,
		output:   output,
		pc:       pc,
		h:        h,
		slow:     make(chan struct{}, maxSlowDNS),
	}
	d.now, _ = h.(NowHandler)
	d.async, _ = h.(AsyncHandler)
	d.gate, _ = h.(QueryGate)
	size := headroom + mtu
	d.out.New = func() any { return &udpOut{buf: make([]byte, size)} }
	d.resp.New = func() any { return &udpResponse{d: d} }
	return d
}

// deliver answers pkt if it is a UDP query to the resolver that the fast
// path takes; false leaves pkt to gVisor. The caller (Stack.Deliver) holds
// Stack.mu for reading with the stack open, so that the goroutines started
// here are counted in wg before Close waits for them.
func (d *dnsUDP) deliver(pkt []byte) bool {
	client, payload, ok := parseDNSQuery(pkt, d.addr)
	if !ok {
		return false
	}
	d.queries.Add(1)
	if len(payload) < dnsHeaderLen {
		return true // miekg's server drops these too
	}
	if d.gate != nil {
		switch d.gate.AdmitQuery() {
		case dns.Drop:
			return true
		case dns.Refuse:
			d.refuse(client, payload)
			return true
		}
	}
	req, reject := acceptQuery(payload)
	if req == nil {
		return true
	}
	w := d.resp.Get().(*udpResponse)
	w.reset(client)
	switch {
	case reject:
		w.WriteMsg(req)
		d.resp.Put(w)
		return true
	case d.now != nil && d.now.ServeDNSNow(w, req):
		d.resp.Put(w)
		return true
	}
	if d.async != nil {
		// Counted like a goroutine of a slow query, so that Close waits
		// until the handler is done with w.
		d.wg.Add(1)
		if d.async.ServeDNSAsync(w, req) {
			return true
		}
		d.wg.Done()
	}
	select {
	case d.slow <- struct{}{}:
	default:
		d.drops.Add(1)
		d.resp.Put(w)
		return true
	}
	d.wg.Go(func() {
		defer func() { <-d.slow }()
		d.h.ServeDNS(w, req)
		d.resp.Put(w)
	})
	return true
}

// refuse answers the query q of client REFUSED without unpacking it: its
// header and question, flags turned into a response's. What is not a plain
// query with one question whose name is uncompressed gets nothing.
func (d *dnsUDP) refuse(client netip.AddrPort, q []byte) {
	n := refusal(q)
	if n == 0 {
		return
	}
	o := d.out.Get().(*udpOut)
	defer d.out.Put(o)
	b := o.buf[d.headroom+udpIPv4HeaderLen:]
	if n > len(b) {
		return
	}
	b = b[:n]
	copy(b, q)
	markRefused(b)
	w := udpResponse{d: d}
	w.reset(client)
	w.send(o, b)
}

// markRefused turns the header and question b of a query into REFUSED.
func markRefused(b []byte) {
	b[2] = b[2]&0x79 | 0x80         // QR; opcode and RD kept, AA and TC cleared
	b[3] = 0x80 | mdns.RcodeRefused // RA, no Z/AD/CD
	clear(b[6:12])                  // no answer, authority or additional records
}

// refusal returns the length of q's header and question when q is a
// query (QR clear, opcode QUERY) with exactly one question whose name has
// no compression pointer, else 0.
func refusal(q []byte) int {
	if len(q) < dnsHeaderLen || q[2]&0xf8 != 0 || binary.BigEndian.Uint16(q[4:]) != 1 {
		return 0
	}
	i := dnsHeaderLen
	for {
		if i >= len(q) {
			return 0
		}
		l := int(q[i])
		if l == 0 {
			break
		}
		if l > 63 {
			return 0 // a pointer or a reserved label type
		}
		i += 1 + l
	}
	i += 1 + 4 // the root label, type and class
	if i > len(q) || i-dnsHeaderLen > 255+4 {
		return 0
	}
	return i
}

// wait waits for the goroutines of queries in flight, as miekg's server
// waits for its own; Stack.Close calls it once deliveries are refused.
func (d *dnsUDP) wait() { d.wg.Wait() }

// parseDNSQuery returns the client and the UDP payload of pkt when it is an
// IPv4 packet without options or fragmentation, UDP from a non-zero port to
// resolver port 53, with valid IPv4 and UDP checksums (a zero UDP checksum
// means none) and lengths that agree. Anything else is for gVisor, which
// reassembles, counts malformed packets and answers as it always did.
func parseDNSQuery(pkt []byte, resolver tcpip.Address) (client netip.AddrPort, payload []byte, ok bool) {
	if len(pkt) < udpIPv4HeaderLen || pkt[0] != 0x45 {
		return netip.AddrPort{}, nil, false
	}
	ip := header.IPv4(pkt)
	total := int(ip.TotalLength())
	if total < udpIPv4HeaderLen || total > len(pkt) ||
		ip.Protocol() != uint8(header.UDPProtocolNumber) ||
		ip.More() || ip.FragmentOffset() != 0 ||
		ip.DestinationAddress() != resolver ||
		!ip.IsChecksumValid() {
		return netip.AddrPort{}, nil, false
	}
	src := netip.AddrFrom4(ip.SourceAddress().As4())
	if !src.IsGlobalUnicast() {
		return netip.AddrPort{}, nil, false
	}
	udp := header.UDP(pkt[header.IPv4MinimumSize:total])
	if udp.DestinationPort() != DNSPort || udp.SourcePort() == 0 || int(udp.Length()) != len(udp) {
		return netip.AddrPort{}, nil, false
	}
	if udp.Checksum() != 0 {
		xsum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, ip.SourceAddress(), resolver, udp.Length())
		if udp.CalculateChecksum(checksum.Checksum(udp.Payload(), xsum)) != 0xffff {
			return netip.AddrPort{}, nil, false
		}
	}
	return netip.AddrPortFrom(src, udp.SourcePort()), udp.Payload(), true
}

// acceptQuery applies what miekg's server does to a datagram before its
// handler sees it (Server.serveDNS with DefaultMsgAcceptFunc): a response
// is ignored (nil); an opcode other than QUERY and NOTIFY is refused with
// NOTIMP, odd section counts or a message that does not unpack with FORMERR
// (reject: req is then the answer, built as miekg builds it); otherwise req
// is the query. b holds at least the header.
func acceptQuery(b []byte) (req *mdns.Msg, reject bool) {
	dh := mdns.Header{
		Id:      binary.BigEndian.Uint16(b[0:]),
		Bits:    binary.BigEndian.Uint16(b[2:]),
		Qdcount: binary.BigEndian.Uint16(b[4:]),
		Ancount: binary.BigEndian.Uint16(b[6:]),
		Nscount: binary.BigEndian.Uint16(b[8:]),
		Arcount: binary.BigEndian.Uint16(b[10:]),
	}
	req = new(mdns.Msg)
	action := mdns.DefaultMsgAcceptFunc(dh)
	switch action {
	case mdns.MsgIgnore:
		return nil, false
	case mdns.MsgAccept:
		if req.Unpack(b) == nil {
			return req, false
		}
		// What did unpack stays in req, as in miekg's server.
	default:
		// The header only: a header-long message unpacks to just that.
		if err := req.Unpack(b[:dnsHeaderLen]); err != nil {
			return nil, false // cannot happen: 12 bytes always unpack
		}
	}
	opcode := req.Opcode
	req.SetRcodeFormatError(req)
	req.Zero = false
	if action == mdns.MsgRejectNotImplemented {
		req.Opcode = opcode
		req.Rcode = mdns.RcodeNotImplemented
	}
	req.Ns, req.Answer, req.Extra = nil, nil, nil
	return req, true
}

// udpResponse is the mdns.ResponseWriter of one fast-path query. They
// are pooled with the address RemoteAddr returns, so that answering
// allocates neither: a handler uses the writer and that address only until
// it returns (miekg's own writers make the same demand of the writer).
type udpResponse struct {
	d      *dnsUDP
	client netip.AddrPort
	remote net.UDPAddr // valid when hasRemote
	ip     [4]byte     // remote.IP's storage
	closed bool

	hasRemote bool
}

// reset makes w the writer of a query of client.
func (w *udpResponse) reset(client netip.AddrPort) {
	w.client, w.closed, w.hasRemote = client, false, false
}

var _ mdns.ResponseWriter = (*udpResponse)(nil)

func (w *udpResponse) LocalAddr() net.Addr { return w.d.local }

func (w *udpResponse) RemoteAddr() net.Addr {
	if !w.hasRemote {
		w.ip = w.client.Addr().As4()
		w.remote = net.UDPAddr{IP: w.ip[:], Port: int(w.client.Port())}
		w.hasRemote = true
	}
	return &w.remote
}

// WriteMsg packs m straight into the packet buffer behind the IPv4 and UDP
// headers when it fits the MTU.
func (w *udpResponse) WriteMsg(m *mdns.Msg) error {
	if w.closed {
		return errWriteAfterClose
	}
	o := w.d.out.Get().(*udpOut)
	defer w.d.out.Put(o)
	space := o.buf[w.d.headroom+udpIPv4HeaderLen:]
	b, err := m.PackBuffer(space)
	if err != nil {
		return err
	}
	return w.send(o, b)
}

// Write sends b, a packed DNS message, as the answer.
func (w *udpResponse) Write(b []byte) (int, error) {
	if w.closed {
		return 0, errWriteAfterClose
	}
	o := w.d.out.Get().(*udpOut)
	defer w.d.out.Put(o)
	if err := w.send(o, b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// send writes the message b (packed in o's buffer already, or anywhere
// else) to the client.
func (w *udpResponse) send(o *udpOut, b []byte) error {
	d := w.d
	if udpIPv4HeaderLen+len(b) > d.mtu {
		// Counted by the link like everything gVisor sends.
		_, err := d.pc.WriteTo(b, w.RemoteAddr())
		return err
	}
	start := d.headroom
	end := start + udpIPv4HeaderLen + len(b)
	p := o.buf[start:end]
	copy(p[udpIPv4HeaderLen:], b) // a no-op when PackBuffer packed in place
	dst := tcpip.AddrFrom4(w.client.Addr().As4())
	ip := header.IPv4(p)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(p)),
		Flags:       header.IPv4FlagDontFragment,
		TTL:         64,
		Protocol:    uint8(header.UDPProtocolNumber),
		SrcAddr:     d.addr,
		DstAddr:     dst,
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	udp := header.UDP(p[header.IPv4MinimumSize:])
	udpLen := uint16(len(udp))
	udp.Encode(&header.UDPFields{SrcPort: DNSPort, DstPort: w.client.Port(), Length: udpLen})
	xsum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, d.addr, dst, udpLen)
	sum := ^udp.CalculateChecksum(checksum.Checksum(b, xsum))
	if sum == 0 {
		sum = 0xffff // RFC 768: a computed zero is sent as all ones
	}
	udp.SetChecksum(sum)
	o.list[0] = o.buf[:end]
	d.output(o.list[:], start)
	o.list[0] = nil
	d.answers.Add(1)
	return nil
}

// Done is the end of a query taken by ServeDNSAsync: the writer goes back
// to the pool.
func (w *udpResponse) Done() {
	d := w.d
	d.resp.Put(w)
	d.wg.Done()
}

func (w *udpResponse) Close() error {
	w.closed = true
	return nil
}

func (w *udpResponse) TsigStatus() error   { return nil }
func (w *udpResponse) TsigTimersOnly(bool) {}
func (w *udpResponse) Hijack()             {}

var errWriteAfterClose = errors.New("dns: write after Close")
