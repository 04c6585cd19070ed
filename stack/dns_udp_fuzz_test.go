package stack

import (
	"bytes"
	"net/netip"
	"testing"

	mdns "github.com/miekg/dns"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/stack/stacktest"
)

// FuzzParseDNSQuery: any bytes from a container; what the fast path takes
// is a well-formed datagram to the resolver whose payload lies inside it.
func FuzzParseDNSQuery(f *testing.F) {
	client := netip.MustParseAddrPort("10.240.0.7:5353")
	dst := netip.AddrPortFrom(resolver, DNSPort)
	f.Add(stacktest.UDPPacket(client, dst, []byte{0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 'x', 0, 0, 1, 0, 1}))
	f.Add(stacktest.UDPPacket(client, dst, nil))
	f.Add([]byte{0x45, 0, 0, 28})
	addr := tcpip.AddrFrom4(resolver.As4())
	f.Fuzz(func(t *testing.T, pkt []byte) {
		c, payload, ok := parseDNSQuery(pkt, addr)
		if !ok {
			return
		}
		ip := header.IPv4(pkt)
		if !ip.IsChecksumValid() || ip.More() || ip.FragmentOffset() != 0 || ip.DestinationAddress() != addr {
			t.Fatalf("took a packet that is not a whole datagram to the resolver: % x", pkt)
		}
		if c.Port() == 0 || !c.Addr().Is4() {
			t.Fatalf("client %v", c)
		}
		end := int(ip.TotalLength())
		if len(payload) != end-udpIPv4HeaderLen || !bytes.Equal(payload, pkt[udpIPv4HeaderLen:end]) {
			t.Fatalf("payload is not the datagram's: %d bytes of %d", len(payload), end)
		}
	})
}

// FuzzAcceptQuery: any DNS payload of at least a header. A query comes
// back to be served, a refusal comes back as a response that packs, with
// the query's id.
func FuzzAcceptQuery(f *testing.F) {
	q, _ := new(mdns.Msg).SetQuestion("x.example.", mdns.TypeA).Pack()
	f.Add(q)
	f.Add(q[:dnsHeaderLen])
	f.Add(append(q[:len(q):len(q)], 0xc0, 0x0c))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < dnsHeaderLen {
			return
		}
		req, reject := acceptQuery(b)
		if req == nil {
			if b[2]&0x80 == 0 {
				t.Fatalf("ignored a message that is not a response: % x", b[:dnsHeaderLen])
			}
			return
		}
		if !reject {
			return
		}
		if !req.Response || req.Id != uint16(b[0])<<8|uint16(b[1]) {
			t.Fatalf("refusal %v for id %#x", req.MsgHdr, uint16(b[0])<<8|uint16(b[1]))
		}
		if req.Rcode != mdns.RcodeFormatError && req.Rcode != mdns.RcodeNotImplemented {
			t.Fatalf("refusal with rcode %d", req.Rcode)
		}
		if _, err := req.Pack(); err != nil {
			t.Fatalf("refusal does not pack: %v", err)
		}
	})
}

// FuzzRefusal: any DNS payload. What refusal takes is a query with one
// question that lies inside the payload; the REFUSED built from it unpacks
// with that question.
func FuzzRefusal(f *testing.F) {
	q, _ := new(mdns.Msg).SetQuestion("x.example.", mdns.TypeA).Pack()
	f.Add(q)
	f.Add(q[:dnsHeaderLen])
	f.Add(append(q[:dnsHeaderLen:dnsHeaderLen], 0xc0, 0x0c, 0, 1, 0, 1))
	f.Fuzz(func(t *testing.T, b []byte) {
		n := refusal(b)
		if n == 0 {
			return
		}
		if n > len(b) || n < dnsHeaderLen+5 || b[2]&0x80 != 0 {
			t.Fatalf("took %d bytes of % x", n, b)
		}
		r := append([]byte(nil), b[:n]...)
		markRefused(r)
		m := new(mdns.Msg)
		if err := m.Unpack(r); err != nil {
			t.Fatalf("refusal of % x does not unpack: %v", b, err)
		}
		if len(m.Question) != 1 || !m.Response || m.Rcode != mdns.RcodeRefused {
			t.Fatalf("refusal %v", m)
		}
	})
}
