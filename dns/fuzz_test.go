package dns

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// FuzzHandler feeds any bytes that unpack as a message through the handler
// of a network (no upstream: forwarded names are SERVFAIL at once), over
// UDP and TCP. It must not panic, and every response must pack, answer the
// request's id and fit the client's size.
func FuzzHandler(f *testing.F) {
	seeds := []*mdns.Msg{
		new(mdns.Msg).SetQuestion(webName, mdns.TypeA),
		new(mdns.Msg).SetQuestion("2.worker."+webName, mdns.TypeA),
		new(mdns.Msg).SetQuestion("WEB."+appM+"."+pnA+"."+Zone, mdns.TypeANY),
		new(mdns.Msg).SetQuestion(webName, mdns.TypeAAAA),
		new(mdns.Msg).SetQuestion(Zone, mdns.TypeSOA),
		new(mdns.Msg).SetQuestion(app3+"."+pnB+"."+Zone, mdns.TypeA),
		new(mdns.Msg).SetQuestion("1.0.240.10.in-addr.arpa.", mdns.TypePTR),
		new(mdns.Msg).SetQuestion("example.com.", mdns.TypeA),
		new(mdns.Msg).SetQuestion(`x\.private-network.internal.`, mdns.TypeDS),
		new(mdns.Msg).SetQuestion(webName, mdns.TypeA).SetEdns0(1232, true),
		new(mdns.Msg).SetQuestion("web."+appM+"."+pnA+"."+Zone, mdns.TypeA).SetEdns0(600, false),
		new(mdns.Msg).SetNotify(Zone),
	}
	ch := new(mdns.Msg).SetQuestion("version.bind.", mdns.TypeTXT)
	ch.Question[0].Qclass = mdns.ClassCHAOS
	two := new(mdns.Msg).SetQuestion(webName, mdns.TypeA)
	two.Question = append(two.Question, two.Question[0])
	seeds = append(seeds, ch, two)
	for _, m := range seeds {
		b, err := m.Pack()
		if err != nil {
			f.Fatalf("seed %v: %v", m.Question, err)
		}
		f.Add(b)
	}
	r, err := New(Config{View: testView()})
	if err != nil {
		f.Fatal(err)
	}
	defer r.Close()
	h := r.Handler(pnA)

	f.Fuzz(func(t *testing.T, data []byte) {
		for _, w := range []*fakeWriter{udpWriter("10.240.0.5"), tcpWriter("10.240.0.5")} {
			req := new(mdns.Msg)
			if err := req.Unpack(data); err != nil {
				return
			}
			h.ServeDNS(w, req)
			if req.Response {
				if len(w.msgs) != 0 {
					t.Fatalf("answered a response")
				}
				continue
			}
			m, wire := w.only(t)
			if m.Id != req.Id || !m.Response {
				t.Fatalf("response header %+v for request %+v", m.MsgHdr, req.MsgHdr)
			}
			limit := mdns.MaxMsgSize
			if w.remote.Network() == "udp" {
				limit = minUDPSize
				if opt := req.IsEdns0(); opt != nil {
					limit = min(max(int(opt.UDPSize()), minUDPSize), maxUDPSize)
				}
			}
			if len(wire) > limit {
				t.Fatalf("response of %d bytes over %s, limit %d", len(wire), w.remote.Network(), limit)
			}
		}
	})
}

// FuzzUpstreamReply: upstream servers (and whoever can spoof them) write
// any bytes in reply to a forwarded query. A fake upstream on loopback
// answers with the fuzzed message, given the query's id and question so
// that it is taken (bytes that do not unpack become a FORMERR), over UDP
// and, if it says truncated, TCP. Normalizing, caching and relaying it
// must not panic, and the client always gets one response that packs,
// carries its id and fits its size.
func FuzzUpstreamReply(f *testing.F) {
	for _, m := range []*mdns.Msg{
		answerA("127.0.0.8", 60)(new(mdns.Msg).SetQuestion("example.com.", mdns.TypeA), false, nil),
		new(mdns.Msg).SetRcode(new(mdns.Msg).SetQuestion("example.com.", mdns.TypeA), mdns.RcodeNameError),
		func() *mdns.Msg {
			m := answerA("127.0.0.8", 60)(new(mdns.Msg).SetQuestion("example.com.", mdns.TypeA), false, nil)
			m.Truncated = true
			return m
		}(),
		func() *mdns.Msg { // records of our own zone, which normalize strips
			m := answerA("10.240.0.9", 60)(new(mdns.Msg).SetQuestion("example.com.", mdns.TypeA), false, nil)
			m.Extra = append(m.Extra, m.Answer[0])
			m.Answer[0].Header().Name = webName
			return m
		}(),
	} {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0, 0, 0x81, 0x80})

	var reply atomic.Pointer[[]byte]
	up := startUpstream(f, func(req *mdns.Msg, tcp bool, _ <-chan struct{}) *mdns.Msg {
		data := *reply.Load()
		m := new(mdns.Msg)
		if err := m.Unpack(data); err != nil {
			m = new(mdns.Msg).SetRcode(req, mdns.RcodeFormatError)
		}
		m.Id, m.Response, m.Question = req.Id, true, req.Question
		return m
	})
	r, err := New(Config{View: testView(), Upstreams: []string{up.addr}, Timeout: 2 * time.Second})
	if err != nil {
		f.Fatal(err)
	}
	defer r.Close()
	h := r.Handler(pnA)
	n := 0
	f.Fuzz(func(t *testing.T, data []byte) {
		reply.Store(&data)
		n++
		// A name per run: each reply is forwarded, not a cache hit of an
		// earlier one.
		req := wireQuery(t, fmt.Sprintf("q%d.example.com.", n), mdns.TypeA)
		w := udpWriter("10.240.0.5")
		h.ServeDNS(w, req)
		m, wire := w.only(t)
		if m.Id != req.Id || !m.Response {
			t.Fatalf("response header %+v for request %+v", m.MsgHdr, req.MsgHdr)
		}
		if len(wire) > minUDPSize {
			t.Fatalf("response of %d bytes over udp, limit %d", len(wire), minUDPSize)
		}
	})
}
