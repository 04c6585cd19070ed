package dns

import (
	"testing"

	mdns "github.com/miekg/dns"
)

var webName = app1 + "." + pnA + "." + Zone

func TestHandlerRcodes(t *testing.T) {
	tests := []struct {
		name  string
		req   func(t *testing.T) *mdns.Msg
		rcode int
		none  bool // no response at all
	}{
		{name: "class CH", rcode: mdns.RcodeRefused, req: func(t *testing.T) *mdns.Msg {
			return wireQuery(t, webName, mdns.TypeA, func(m *mdns.Msg) { m.Question[0].Qclass = mdns.ClassCHAOS })
		}},
		{name: "class HS", rcode: mdns.RcodeRefused, req: func(t *testing.T) *mdns.Msg {
			return wireQuery(t, webName, mdns.TypeA, func(m *mdns.Msg) { m.Question[0].Qclass = mdns.ClassHESIOD })
		}},
		{name: "class ANY", rcode: mdns.RcodeRefused, req: func(t *testing.T) *mdns.Msg {
			return wireQuery(t, webName, mdns.TypeA, func(m *mdns.Msg) { m.Question[0].Qclass = mdns.ClassANY })
		}},
		{name: "class CH for a forwarded name", rcode: mdns.RcodeRefused, req: func(t *testing.T) *mdns.Msg {
			return wireQuery(t, "version.bind.", mdns.TypeTXT, func(m *mdns.Msg) { m.Question[0].Qclass = mdns.ClassCHAOS })
		}},
		{name: "opcode NOTIFY", rcode: mdns.RcodeNotImplemented, req: func(t *testing.T) *mdns.Msg {
			return wireQuery(t, webName, mdns.TypeSOA, func(m *mdns.Msg) { m.Opcode = mdns.OpcodeNotify })
		}},
		{name: "opcode UPDATE", rcode: mdns.RcodeNotImplemented, req: func(t *testing.T) *mdns.Msg {
			return wireQuery(t, Zone, mdns.TypeSOA, func(m *mdns.Msg) { m.Opcode = mdns.OpcodeUpdate })
		}},
		{name: "opcode IQUERY", rcode: mdns.RcodeNotImplemented, req: func(t *testing.T) *mdns.Msg {
			return wireQuery(t, webName, mdns.TypeA, func(m *mdns.Msg) { m.Opcode = mdns.OpcodeIQuery })
		}},
		{name: "no question", rcode: mdns.RcodeFormatError, req: func(t *testing.T) *mdns.Msg {
			return wireQuery(t, webName, mdns.TypeA, func(m *mdns.Msg) { m.Question = nil })
		}},
		{name: "two questions", rcode: mdns.RcodeFormatError, req: func(t *testing.T) *mdns.Msg {
			return wireQuery(t, webName, mdns.TypeA, func(m *mdns.Msg) {
				m.Question = append(m.Question, mdns.Question{Name: "web." + webName, Qtype: mdns.TypeA, Qclass: mdns.ClassINET})
			})
		}},
		{name: "name without trailing dot (never on the wire)", rcode: mdns.RcodeFormatError, req: func(t *testing.T) *mdns.Msg {
			m := wireQuery(t, webName, mdns.TypeA)
			m.Question[0].Name = webName[:len(webName)-1]
			return m
		}},
		{name: "EDNS version 1", rcode: mdns.RcodeBadVers, req: func(t *testing.T) *mdns.Msg {
			return wireQuery(t, webName, mdns.TypeA, func(m *mdns.Msg) {
				m.SetEdns0(1232, false)
				m.IsEdns0().SetVersion(1)
			})
		}},
		{name: "AXFR of the zone", rcode: mdns.RcodeRefused, req: func(t *testing.T) *mdns.Msg {
			return wireQuery(t, Zone, mdns.TypeAXFR)
		}},
		{name: "IXFR elsewhere", rcode: mdns.RcodeRefused, req: func(t *testing.T) *mdns.Msg {
			return wireQuery(t, "example.com.", mdns.TypeIXFR)
		}},
		{name: "forwarded name without upstream", rcode: mdns.RcodeServerFailure, req: func(t *testing.T) *mdns.Msg {
			return wireQuery(t, "example.com.", mdns.TypeA)
		}},
		{name: "reverse name outside the private range is forwarded", rcode: mdns.RcodeServerFailure, req: func(t *testing.T) *mdns.Msg {
			return wireQuery(t, "1.0.241.10.in-addr.arpa.", mdns.TypePTR)
		}},
		{name: "a response is dropped", none: true, req: func(t *testing.T) *mdns.Msg {
			return wireQuery(t, webName, mdns.TypeA, func(m *mdns.Msg) { m.Response = true })
		}},
	}
	r := newResolver(t, Config{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := udpWriter("10.240.0.5")
			req := tt.req(t)
			r.Handler(pnA).ServeDNS(w, req)
			if tt.none {
				if len(w.msgs) != 0 {
					t.Fatalf("response written: %v", w.msgs[0])
				}
				return
			}
			m, _ := w.only(t)
			if m.Rcode != tt.rcode {
				t.Fatalf("rcode %s, want %s\n%v", rcodeName(m.Rcode), rcodeName(tt.rcode), m)
			}
			if m.Id != req.Id || !m.Response || !m.RecursionAvailable || m.Authoritative || len(m.Answer) != 0 {
				t.Errorf("header/answer: %v", m)
			}
			if (req.IsEdns0() != nil) != (m.IsEdns0() != nil) {
				t.Errorf("OPT in request %v, in response %v", req.IsEdns0() != nil, m.IsEdns0() != nil)
			}
		})
	}
	st := r.Stats()
	if st.Rcodes["REFUSED"] != 6 || st.Rcodes["NOTIMP"] != 3 || st.Rcodes["FORMERR"] != 3 || st.Rcodes["BADVERS"] != 1 || st.Rcodes["SERVFAIL"] != 2 {
		t.Errorf("rcode counters %v", st.Rcodes)
	}
}

func TestEDNSEcho(t *testing.T) {
	r := newResolver(t, Config{})
	h := r.Handler(pnA)
	for _, do := range []bool{false, true} {
		m := ask(t, h, udpWriter("10.240.0.5"), wireQuery(t, webName, mdns.TypeA, withEDNS(1232, do)))
		opt := m.IsEdns0()
		if opt == nil || opt.Do() != do || opt.Version() != 0 {
			t.Fatalf("DO=%v: OPT %v", do, opt)
		}
		if len(m.Answer) != 2 {
			t.Errorf("answers %v", m.Answer)
		}
	}
	// NXDOMAIN carries the OPT too.
	m := ask(t, h, udpWriter("10.240.0.5"), wireQuery(t, appX+"."+pnA+"."+Zone, mdns.TypeA, withEDNS(1232, true)))
	if m.Rcode != mdns.RcodeNameError || m.IsEdns0() == nil || !m.IsEdns0().Do() {
		t.Errorf("NXDOMAIN with EDNS: %v", m)
	}
	// No OPT in, no OPT out.
	m = ask(t, h, udpWriter("10.240.0.5"), wireQuery(t, webName, mdns.TypeA))
	if m.IsEdns0() != nil {
		t.Errorf("OPT without EDNS request: %v", m)
	}
}

func TestTruncation(t *testing.T) {
	name := "web." + appM + "." + pnA + "." + Zone
	tests := []struct {
		name    string
		w       *fakeWriter
		edit    []func(*mdns.Msg)
		max     int  // response size limit
		all     bool // all 60 records
		truncOK bool
	}{
		{name: "UDP without EDNS", w: udpWriter("10.240.0.5"), max: 512},
		{name: "UDP EDNS 1232", w: udpWriter("10.240.0.5"), edit: []func(*mdns.Msg){withEDNS(1232, false)}, max: 1232, all: true},
		{name: "UDP EDNS 4096", w: udpWriter("10.240.0.5"), edit: []func(*mdns.Msg){withEDNS(4096, false)}, max: 4096, all: true},
		{name: "UDP EDNS below 512 counts as 512", w: udpWriter("10.240.0.5"), edit: []func(*mdns.Msg){withEDNS(100, false)}, max: 512},
		{name: "TCP", w: tcpWriter("10.240.0.5"), max: mdns.MaxMsgSize, all: true},
	}
	r := newResolver(t, Config{})
	wantTrunc := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r.Handler(pnA).ServeDNS(tt.w, wireQuery(t, name, mdns.TypeA, tt.edit...))
			m, wire := tt.w.only(t)
			if len(wire) > tt.max {
				t.Errorf("response of %d bytes, limit %d", len(wire), tt.max)
			}
			if tt.all {
				if len(m.Answer) != 60 || m.Truncated {
					t.Errorf("%d answers, TC=%v; want 60 and no TC", len(m.Answer), m.Truncated)
				}
				return
			}
			wantTrunc++
			if !m.Truncated || len(m.Answer) == 0 || len(m.Answer) >= 60 {
				t.Errorf("%d answers, TC=%v; want some and TC", len(m.Answer), m.Truncated)
			}
			// What fits is sent: one more record would not fit.
			if len(wire)+16 <= tt.max {
				t.Errorf("response of %d bytes leaves room under %d", len(wire), tt.max)
			}
		})
	}
	if got := r.Stats().Truncated; got != uint64(wantTrunc) {
		t.Errorf("Truncated counter %d, want %d", got, wantTrunc)
	}
}

func TestStatsLocal(t *testing.T) {
	r := newResolver(t, Config{})
	h := r.Handler(pnA)
	ask(t, h, udpWriter("10.240.0.5"), wireQuery(t, webName, mdns.TypeA))
	ask(t, h, udpWriter("10.240.0.5"), wireQuery(t, appX+"."+pnA+"."+Zone, mdns.TypeA))
	ask(t, h, udpWriter("10.240.0.5"), wireQuery(t, "9.0.240.10.in-addr.arpa.", mdns.TypePTR))
	st := r.Stats()
	if st.Local != 3 || st.Rcodes["NOERROR"] != 1 || st.Rcodes["NXDOMAIN"] != 2 || st.Forwarded != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestNew(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"ok", Config{View: staticView{}, Upstreams: []string{"127.0.0.1:53", "[::1]:5353"}}, true},
		{"no view", Config{}, false},
		{"upstream without port", Config{View: staticView{}, Upstreams: []string{"127.0.0.1"}}, false},
		{"upstream name", Config{View: staticView{}, Upstreams: []string{"dns.example:53"}}, false},
		{"upstream port 0", Config{View: staticView{}, Upstreams: []string{"127.0.0.1:0"}}, false},
		{"negative timeout", Config{View: staticView{}, Timeout: -1}, false},
		{"negative bound", Config{View: staticView{}, MaxInflightPerClient: -1}, false},
	} {
		r, err := New(tt.cfg)
		if (err == nil) != tt.ok {
			t.Errorf("%s: err %v", tt.name, err)
		}
		if r != nil {
			r.Close()
		}
	}
}

func TestClosedAnswersServfail(t *testing.T) {
	r := newResolver(t, Config{})
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	m := ask(t, r.Handler(pnA), udpWriter("10.240.0.5"), wireQuery(t, webName, mdns.TypeA))
	if m.Rcode != mdns.RcodeServerFailure {
		t.Errorf("after Close: %s", rcodeName(m.Rcode))
	}
}
