package dns

import (
	"testing"

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
