package stack

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/dns"
	"github.com/vrouter/vrouter/internal/leaktest"
	"github.com/vrouter/vrouter/internal/poll"
	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/stack/stacktest"
)

const (
	testPN  = "pn-ad0fd6a1-d05e-40ea-bf63-c4f8a75a9d8c"
	testApp = "ap-a71da13f-7c70-4c00-a644-eee8558d8053"
)

// testView has one web container, so that answers do not rotate.
type testView struct{}

func (testView) Containers(pn, app string) []dns.Record {
	if pn == testPN && app == testApp {
		return []dns.Record{{Type: "web", Number: 1, Addr: netip.MustParseAddr("10.240.0.9")}}
	}
	return nil
}

// captured collects the packets a stack sends, as the router would get
// them.
type captured struct {
	mu   sync.Mutex
	pkts [][]byte
}

func (c *captured) output(bufs [][]byte, offset int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range bufs {
		c.pkts = append(c.pkts, append([]byte(nil), b[offset:]...))
	}
}

// to returns the UDP packets captured so far for the client port.
func (c *captured) to(port uint16) [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out [][]byte
	for _, p := range c.pkts {
		ip := header.IPv4(p)
		if ip.Protocol() != uint8(header.UDPProtocolNumber) {
			continue
		}
		if ip.FragmentOffset() == 0 && header.UDP(p[ip.HeaderLength():]).DestinationPort() != port {
			continue
		}
		out = append(out, p)
	}
	return out
}

// newDNSStack builds a stack serving h whose packets go to a capture;
// with fast false the UDP fast path is off, so queries take gVisor and
// miekg's server, as before it existed.
func newDNSStack(t *testing.T, h mdns.Handler, fast bool) (*Stack, *captured) {
	t.Helper()
	c := &captured{}
	s, err := New(Config{Name: "dns", Addr: resolver, MTU: 1390, Headroom: router.Headroom, DNS: h, Output: c.output})
	if err != nil {
		t.Fatal(err)
	}
	if !fast {
		s.dnsUDP = nil
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s, c
}

func newTestResolver(t *testing.T) *dns.Resolver {
	t.Helper()
	r, err := dns.New(dns.Config{View: testView{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func packQuery(t *testing.T, name string, qtype uint16, edit ...func(*mdns.Msg)) []byte {
	t.Helper()
	m := new(mdns.Msg).SetQuestion(name, qtype)
	m.Id = 0x4242
	for _, e := range edit {
		e(m)
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkHeaders checks what gVisor puts in the headers of an answer from
// the resolver to client.
func checkHeaders(t *testing.T, p []byte, client netip.AddrPort) {
	t.Helper()
	ip := header.IPv4(p)
	if !ip.IsValid(len(p)) || !ip.IsChecksumValid() {
		t.Fatalf("invalid IPv4 header % x", p[:header.IPv4MinimumSize])
	}
	if ip.SourceAddress() != tcpip.AddrFrom4(resolver.As4()) || ip.DestinationAddress() != tcpip.AddrFrom4(client.Addr().As4()) ||
		ip.TTL() != 64 || ip.Flags() != header.IPv4FlagDontFragment || ip.ID() != 0 || p[1] != 0 {
		t.Fatalf("IPv4 header %+v", ip)
	}
	u := header.UDP(p[header.IPv4MinimumSize:])
	if u.SourcePort() != DNSPort || u.DestinationPort() != client.Port() || int(u.Length()) != len(u) {
		t.Fatalf("UDP header % x", p[header.IPv4MinimumSize:udpIPv4HeaderLen])
	}
	x := header.PseudoHeaderChecksum(header.UDPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), u.Length())
	if u.CalculateChecksum(checksum.Checksum(u.Payload(), x)) != 0xffff {
		t.Fatal("bad UDP checksum")
	}
}

// ask delivers one query payload from client and returns the answers (UDP
// payloads) that came back once a follow-up query from the same client was
// answered and at least atLeast answers to the first one arrived. The
// follow-up alone proves only that the first query was read: miekg's
// server handles each datagram in a goroutine of its own, so the follow-up's
// answer can overtake the first one's.
func ask(t *testing.T, s *Stack, c *captured, client netip.AddrPort, payload []byte, atLeast int) [][]byte {
	t.Helper()
	s.Deliver(stacktest.UDPPacket(client, netip.AddrPortFrom(resolver, DNSPort), payload))
	follow := packQuery(t, "1.web."+testApp+"."+testPN+"."+dns.Zone, mdns.TypeA, func(m *mdns.Msg) { m.Id = 0xf011 })
	s.Deliver(stacktest.UDPPacket(client, netip.AddrPortFrom(resolver, DNSPort), follow))
	var got [][]byte
	poll.Until(t, 5*time.Second, "the follow-up answer", func() bool {
		got = got[:0]
		followed := false
		for _, p := range c.to(client.Port()) {
			checkHeaders(t, p, client)
			u := header.UDP(p[header.IPv4MinimumSize:]).Payload()
			if len(u) >= 2 && binary.BigEndian.Uint16(u) == 0xf011 {
				followed = true
				continue
			}
			got = append(got, u)
		}
		return followed && len(got) >= atLeast
	})
	return got
}

// TestDNSFastPathAsServer sends the same datagrams to a stack with the UDP
// fast path and to one without (gVisor and miekg's server) and expects the
// same answers, byte for byte, for queries and for what miekg's server
// refuses or ignores.
func TestDNSFastPathAsServer(t *testing.T) {
	leaktest.Check(t)
	r := newTestResolver(t)
	h := r.Handler(testPN)
	fast, fastOut := newDNSStack(t, h, true)
	slow, slowOut := newDNSStack(t, h, false)
	name := "1.web." + testApp + "." + testPN + "." + dns.Zone
	query := packQuery(t, name, mdns.TypeA)
	tests := []struct {
		name    string
		payload []byte
		answers int
	}{
		{"private name", query, 1},
		{"private name, EDNS DO", packQuery(t, name, mdns.TypeA, func(m *mdns.Msg) { m.SetEdns0(1232, true) }), 1},
		{"NXDOMAIN", packQuery(t, "9.web."+testApp+"."+testPN+"."+dns.Zone, mdns.TypeA), 1},
		{"reverse zone", packQuery(t, "9.0.240.10.in-addr.arpa.", mdns.TypePTR), 1},
		{"forwarded name without upstream", packQuery(t, "example.com.", mdns.TypeA), 1},
		{"class CH", packQuery(t, "version.bind.", mdns.TypeTXT, func(m *mdns.Msg) { m.Question[0].Qclass = mdns.ClassCHAOS }), 1},
		{"response bit", packQuery(t, name, mdns.TypeA, func(m *mdns.Msg) { m.Response = true }), 0},
		{"opcode UPDATE", packQuery(t, "x.", mdns.TypeSOA, func(m *mdns.Msg) { m.Opcode = mdns.OpcodeUpdate }), 1},
		{"opcode IQUERY", packQuery(t, name, mdns.TypeA, func(m *mdns.Msg) { m.Opcode = mdns.OpcodeIQuery }), 1},
		{"two questions", packQuery(t, name, mdns.TypeA, func(m *mdns.Msg) {
			m.Question = append(m.Question, m.Question[0])
		}), 1},
		{"no question", packQuery(t, name, mdns.TypeA, func(m *mdns.Msg) { m.Question = nil }), 1},
		{"question cut short", query[:len(query)-3], 1},
		{"trailing bytes", append(slices.Clone(query), 1, 2, 3), 1},
		{"header only, one question announced", query[:dnsHeaderLen], 1},
		{"shorter than a header", query[:dnsHeaderLen-1], 0},
		{"empty", nil, 0},
		{"not DNS", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 1},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := netip.AddrPortFrom(netip.MustParseAddr("10.240.0.7"), uint16(20000+i))
			want := ask(t, slow, slowOut, client, tt.payload, tt.answers)
			got := ask(t, fast, fastOut, client, tt.payload, len(want))
			if len(want) != tt.answers {
				t.Fatalf("the server answered %d times, the test expects %d", len(want), tt.answers)
			}
			if len(got) != len(want) {
				t.Fatalf("fast path answered %d times, the server %d", len(got), len(want))
			}
			for j := range got {
				if !bytes.Equal(got[j], want[j]) {
					t.Fatalf("answer differs:\nfast   % x\nserver % x", got[j], want[j])
				}
			}
		})
	}
	if st := fast.Stats(); st.DNSFastQueries != uint64(2*len(tests)) || st.Delivered < st.DNSFastQueries {
		t.Errorf("fast path stats %+v, want %d fast queries", st, 2*len(tests))
	}
	if st := slow.Stats(); st.DNSFastQueries != 0 {
		t.Errorf("stack without fast path counted %d fast queries", st.DNSFastQueries)
	}
}

// TestDNSFastPathIgnoresOddPackets: what the fast path does not take
// (fragments, IP options, bad checksums, other ports) still reaches gVisor
// and is treated as before.
func TestDNSFastPathIgnoresOddPackets(t *testing.T) {
	query := packQuery(t, "x.example.", mdns.TypeA)
	client := netip.MustParseAddrPort("10.240.0.7:5353")
	dst := netip.AddrPortFrom(resolver, DNSPort)
	good := stacktest.UDPPacket(client, dst, query)
	tests := map[string][]byte{
		"more fragments": func() []byte {
			p := slices.Clone(good)
			header.IPv4(p).SetFlagsFragmentOffset(header.IPv4FlagMoreFragments, 0)
			header.IPv4(p).SetChecksum(0)
			header.IPv4(p).SetChecksum(^header.IPv4(p).CalculateChecksum())
			return p
		}(),
		"bad IPv4 checksum": func() []byte {
			p := slices.Clone(good)
			p[10] ^= 0xff
			return p
		}(),
		"bad UDP checksum": func() []byte {
			p := slices.Clone(good)
			p[len(p)-1] ^= 0xff
			return p
		}(),
		"UDP length larger than the packet": func() []byte {
			p := slices.Clone(good)
			binary.BigEndian.PutUint16(p[24:], uint16(len(p)))
			return p
		}(),
		"other port":    stacktest.UDPPacket(client, netip.AddrPortFrom(resolver, 54), query),
		"source port":   stacktest.UDPPacket(netip.AddrPortFrom(client.Addr(), 0), dst, query),
		"other address": stacktest.UDPPacket(client, netip.MustParseAddrPort("169.254.20.11:53"), query),
		"TCP":           func() []byte { p := slices.Clone(good); p[9] = 6; return p }(),
		"IP options":    withIPOptions(good),
	}
	addr := tcpip.AddrFrom4(resolver.As4())
	for name, p := range tests {
		if _, _, ok := parseDNSQuery(p, addr); ok {
			t.Errorf("%s: taken by the fast path", name)
		}
	}
	if c, payload, ok := parseDNSQuery(good, addr); !ok || c != client || !bytes.Equal(payload, query) {
		t.Errorf("a plain query: %v %v %v", c, payload, ok)
	}
	noSum := slices.Clone(good)
	noSum[26], noSum[27] = 0, 0
	if _, _, ok := parseDNSQuery(noSum, addr); !ok {
		t.Error("a query without UDP checksum (allowed in IPv4) was not taken")
	}
	// The one that gVisor answers: the fragment is reassembled with its
	// second half and the query answered by miekg's server.
	s, c := newDNSStack(t, &echoHandler{}, true)
	frags := fragment(good, 16)
	for _, f := range frags {
		s.Deliver(f)
	}
	poll.Until(t, 5*time.Second, "the answer to a fragmented query", func() bool { return len(c.to(client.Port())) == 1 })
	if st := s.Stats(); st.DNSFastQueries != 0 {
		t.Errorf("%d fragments taken by the fast path", st.DNSFastQueries)
	}
}

// withIPOptions returns p with 4 bytes of IPv4 options (end of list).
func withIPOptions(p []byte) []byte {
	out := make([]byte, len(p)+4)
	copy(out, p[:header.IPv4MinimumSize])
	copy(out[header.IPv4MinimumSize+4:], p[header.IPv4MinimumSize:])
	ip := header.IPv4(out)
	out[0] = 0x46
	ip.SetTotalLength(uint16(len(out)))
	ip.SetChecksum(0)
	ip.SetChecksum(^ip.CalculateChecksum())
	return out
}

// fragment cuts an IPv4 packet without options in two at payload offset
// at (a multiple of 8).
func fragment(p []byte, at int) [][]byte {
	hdr, payload := p[:header.IPv4MinimumSize], p[header.IPv4MinimumSize:]
	mk := func(part []byte, off int, more bool) []byte {
		f := append(slices.Clone(hdr), part...)
		ip := header.IPv4(f)
		ip.SetTotalLength(uint16(len(f)))
		flags := uint8(0)
		if more {
			flags = header.IPv4FlagMoreFragments
		}
		ip.SetFlagsFragmentOffset(flags, uint16(off))
		ip.SetID(7)
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
		return f
	}
	return [][]byte{mk(payload[:at], 0, true), mk(payload[at:], at, false)}
}

// bigHandler answers with n A records (more than fit the MTU).
type bigHandler struct{ n int }

func (h bigHandler) ServeDNS(w mdns.ResponseWriter, r *mdns.Msg) {
	m := new(mdns.Msg).SetReply(r)
	for i := range h.n {
		m.Answer = append(m.Answer, &mdns.A{
			Hdr: mdns.RR_Header{Name: r.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 30},
			A:   net.IPv4(10, 240, byte(i>>8), byte(i)),
		})
	}
	w.WriteMsg(m)
}

// ServeDNSNow makes the fast path answer on the delivering goroutine.
func (h bigHandler) ServeDNSNow(w mdns.ResponseWriter, r *mdns.Msg) bool {
	h.ServeDNS(w, r)
	return true
}

// TestDNSFastPathBigAnswer: an answer larger than the MTU goes out through
// gVisor, fragmented, as before.
func TestDNSFastPathBigAnswer(t *testing.T) {
	leaktest.Check(t)
	s, c := newDNSStack(t, bigHandler{n: 200}, true)
	client := netip.MustParseAddrPort("10.240.0.7:5353")
	q := packQuery(t, "many.example.", mdns.TypeA, func(m *mdns.Msg) { m.SetEdns0(4096, false) })
	s.Deliver(stacktest.UDPPacket(client, netip.AddrPortFrom(resolver, DNSPort), q))
	var frags [][]byte
	poll.Until(t, 5*time.Second, "the fragments of the answer", func() bool {
		frags = c.to(client.Port())
		last := false
		for _, f := range frags {
			last = last || !header.IPv4(f).More()
		}
		return len(frags) >= 2 && last
	})
	size := 0
	for _, f := range frags {
		ip := header.IPv4(f)
		if len(f) > 1390 {
			t.Fatalf("fragment of %d bytes, MTU 1390", len(f))
		}
		size += len(ip.Payload())
	}
	// Each compressed A record takes 16 bytes.
	if size < 200*16 {
		t.Fatalf("fragments carry %d bytes, want more than %d", size, 200*16)
	}
	if st := s.Stats(); st.DNSFastQueries != 1 {
		t.Errorf("fast path took %d queries, want 1", st.DNSFastQueries)
	}
}

// blockingHandler needs an upstream for every name: ServeDNSNow declines,
// and ServeDNS waits for release.
type blockingHandler struct {
	entered chan struct{}
	release chan struct{}
}

func (h *blockingHandler) ServeDNS(w mdns.ResponseWriter, r *mdns.Msg) {
	h.entered <- struct{}{}
	<-h.release
	w.WriteMsg(new(mdns.Msg).SetReply(r))
}

func (h *blockingHandler) ServeDNSNow(mdns.ResponseWriter, *mdns.Msg) bool { return false }

// TestDNSFastPathSlowQueries: a query that needs an upstream does not hold
// up the delivering goroutine; it is answered from its own goroutine, a
// bounded number of them, and Close waits for them.
func TestDNSFastPathSlowQueries(t *testing.T) {
	leaktest.Check(t)
	h := &blockingHandler{entered: make(chan struct{}, 4), release: make(chan struct{})}
	c := &captured{}
	s, err := New(Config{Name: "dns", Addr: resolver, MTU: 1390, Headroom: router.Headroom, DNS: h, Output: c.output})
	if err != nil {
		t.Fatal(err)
	}
	s.dnsUDP.slow = make(chan struct{}, 2) // room for two waiting queries
	dst := netip.AddrPortFrom(resolver, DNSPort)
	for port := uint16(1); port <= 3; port++ {
		// Deliver returns at once although the handler blocks.
		s.Deliver(stacktest.UDPPacket(netip.AddrPortFrom(netip.MustParseAddr("10.240.0.7"), port), dst, packQuery(t, "slow.example.", mdns.TypeA)))
	}
	<-h.entered
	<-h.entered
	if st := s.Stats(); st.UDPQueueDrops != 1 {
		t.Errorf("UDPQueueDrops %d, want 1 (the third query, beyond the bound)", st.UDPQueueDrops)
	}
	closed := make(chan error)
	go func() { closed <- s.Close() }()
	close(h.release)
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	// Close waited for both: their answers are out when it returns.
	if n := len(c.to(1)) + len(c.to(2)); n != 2 {
		t.Errorf("%d answers when Close returned, want 2", n)
	}
}

// BenchmarkDNSFastPath measures one private query through Stack.Deliver to
// an Output that discards the answer: parse, accept, the resolver's
// handler, pack, headers.
func BenchmarkDNSFastPath(b *testing.B) {
	r, err := dns.New(dns.Config{View: testView{}})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	s, err := New(Config{Name: "bench", Addr: resolver, MTU: 1390, Headroom: router.Headroom, DNS: r.Handler(testPN), Output: func([][]byte, int) {}})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	m := new(mdns.Msg).SetQuestion("1.web."+testApp+"."+testPN+"."+dns.Zone, mdns.TypeA)
	q, err := m.Pack()
	if err != nil {
		b.Fatal(err)
	}
	pkt := stacktest.UDPPacket(netip.MustParseAddrPort("10.240.0.7:5353"), netip.AddrPortFrom(resolver, DNSPort), q)
	b.ReportAllocs()
	for b.Loop() {
		s.Deliver(pkt)
	}
	if st := s.Stats(); st.Sent == 0 {
		b.Fatal("no answer sent")
	}
}

// gatedHandler is a resolver's handler with scripted verdicts of its
// query gate.
type gatedHandler struct {
	NowHandler
	verdict dns.Admission
	asked   int
}

func (h *gatedHandler) AdmitQuery() dns.Admission {
	h.asked++
	return h.verdict
}

// TestDNSFastPathGate: the fast path asks the gate of every query before
// it serves it; a dropped query gets nothing, a refused one REFUSED with
// its id and question (what glibc and Go's resolver match on).
func TestDNSFastPathGate(t *testing.T) {
	leaktest.Check(t)
	r := newTestResolver(t)
	h := &gatedHandler{NowHandler: r.Handler(testPN).(NowHandler)}
	s, c := newDNSStack(t, h, true)
	name := "1.web." + testApp + "." + testPN + "." + dns.Zone
	q := packQuery(t, name, mdns.TypeA, func(m *mdns.Msg) { m.SetEdns0(1232, false) })
	to := netip.AddrPortFrom(resolver, DNSPort)

	h.verdict = dns.Drop
	client := netip.MustParseAddrPort("10.240.0.7:5001")
	s.Deliver(stacktest.UDPPacket(client, to, q))
	if h.asked != 1 {
		t.Fatalf("the gate was asked %d times for one query", h.asked)
	}
	if got := c.to(client.Port()); len(got) != 0 {
		t.Fatalf("a dropped query got %d answers", len(got))
	}

	h.verdict = dns.Refuse
	client = netip.MustParseAddrPort("10.240.0.7:5002")
	s.Deliver(stacktest.UDPPacket(client, to, q))
	got := c.to(client.Port())
	if len(got) != 1 {
		t.Fatalf("a refused query got %d answers, want 1", len(got))
	}
	checkHeaders(t, got[0], client)
	m := new(mdns.Msg)
	if err := m.Unpack(header.UDP(got[0][header.IPv4MinimumSize:]).Payload()); err != nil {
		t.Fatalf("REFUSED does not unpack: %v", err)
	}
	if m.Id != 0x4242 || !m.Response || m.Rcode != mdns.RcodeRefused || !m.RecursionDesired || !m.RecursionAvailable ||
		len(m.Question) != 1 || m.Question[0].Name != name || m.Question[0].Qtype != mdns.TypeA ||
		len(m.Answer)+len(m.Ns)+len(m.Extra) != 0 {
		t.Fatalf("refusal %v", m)
	}

	h.verdict = dns.Admit
	client = netip.MustParseAddrPort("10.240.0.7:5003")
	ans := ask(t, s, c, client, q, 1)
	if err := m.Unpack(ans[0]); err != nil || m.Rcode != mdns.RcodeSuccess || len(m.Answer) != 1 {
		t.Fatalf("an admitted query: %v (%v)", m, err)
	}
}
