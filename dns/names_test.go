package dns

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	mdns "github.com/miekg/dns"
)

func TestPrivateNames(t *testing.T) {
	base1 := app1 + "." + pnA + "." + Zone
	tests := []struct {
		name  string
		qname string
		qtype uint16
		pn    string // handler's network; pnA if empty
		rcode int
		addrs []string // any order
		soa   bool     // SOA expected in the authority section
		soaAn bool     // SOA expected as the answer
	}{
		{name: "app → web", qname: base1, qtype: mdns.TypeA, addrs: []string{"10.240.0.1", "10.240.0.2"}},
		{name: "type", qname: "worker." + base1, qtype: mdns.TypeA, addrs: []string{"10.240.0.11", "10.240.0.12", "10.240.0.13"}},
		{name: "type web", qname: "web." + base1, qtype: mdns.TypeA, addrs: []string{"10.240.0.1", "10.240.0.2"}},
		{name: "number", qname: "2.worker." + base1, qtype: mdns.TypeA, addrs: []string{"10.240.0.12"}},
		{name: "number web", qname: "1.web." + base1, qtype: mdns.TypeA, addrs: []string{"10.240.0.1"}},
		{name: "ANY", qname: "1.web." + base1, qtype: mdns.TypeANY, addrs: []string{"10.240.0.1"}},
		{name: "upper case", qname: strings.ToUpper("web." + base1), qtype: mdns.TypeA, addrs: []string{"10.240.0.1", "10.240.0.2"}},
		{name: "mixed case", qname: "Worker.AP-A71DA13F-7c70-4c00-a644-eee8558d8053.Pn-Ad0fd6a1-d05e-40ea-bf63-c4f8a75a9d8c.Private-Network.INTERNAL.", qtype: mdns.TypeA, addrs: []string{"10.240.0.11", "10.240.0.12", "10.240.0.13"}},

		{name: "AAAA of existing name is NODATA", qname: base1, qtype: mdns.TypeAAAA, soa: true},
		{name: "TXT of container is NODATA", qname: "1.web." + base1, qtype: mdns.TypeTXT, soa: true},
		{name: "MX of type is NODATA", qname: "worker." + base1, qtype: mdns.TypeMX, soa: true},
		{name: "app without web: A is NODATA", qname: app2 + "." + pnA + "." + Zone, qtype: mdns.TypeA, soa: true},
		{name: "app without web: worker", qname: "worker." + app2 + "." + pnA + "." + Zone, qtype: mdns.TypeA, addrs: []string{"10.240.1.1"}},
		{name: "own PN is an empty non-terminal", qname: pnA + "." + Zone, qtype: mdns.TypeA, soa: true},
		{name: "apex SOA", qname: Zone, qtype: mdns.TypeSOA, soaAn: true},
		{name: "apex upper-case SOA", qname: strings.ToUpper(Zone), qtype: mdns.TypeSOA, soaAn: true},
		{name: "apex NS is NODATA", qname: Zone, qtype: mdns.TypeNS, soa: true},
		{name: "apex A is NODATA", qname: Zone, qtype: mdns.TypeA, soa: true},

		{name: "another PN's name", qname: app3 + "." + pnB + "." + Zone, qtype: mdns.TypeA, rcode: mdns.RcodeNameError, soa: true},
		{name: "another PN itself", qname: pnB + "." + Zone, qtype: mdns.TypeA, rcode: mdns.RcodeNameError, soa: true},
		{name: "our app asked through another PN", qname: base1, qtype: mdns.TypeA, pn: pnB, rcode: mdns.RcodeNameError, soa: true},
		{name: "other PN's handler sees its own", qname: app3 + "." + pnB + "." + Zone, qtype: mdns.TypeA, pn: pnB, addrs: []string{"10.240.0.1"}},
		{name: "unknown app", qname: appX + "." + pnA + "." + Zone, qtype: mdns.TypeA, rcode: mdns.RcodeNameError, soa: true},
		{name: "unknown app AAAA", qname: appX + "." + pnA + "." + Zone, qtype: mdns.TypeAAAA, rcode: mdns.RcodeNameError, soa: true},
		{name: "unknown type", qname: "clock." + base1, qtype: mdns.TypeA, rcode: mdns.RcodeNameError, soa: true},
		{name: "unknown type AAAA", qname: "clock." + base1, qtype: mdns.TypeAAAA, rcode: mdns.RcodeNameError, soa: true},
		{name: "unknown number", qname: "4.worker." + base1, qtype: mdns.TypeA, rcode: mdns.RcodeNameError, soa: true},
		{name: "number 0", qname: "0.worker." + base1, qtype: mdns.TypeA, rcode: mdns.RcodeNameError, soa: true},
		{name: "leading zero", qname: "01.worker." + base1, qtype: mdns.TypeA, rcode: mdns.RcodeNameError, soa: true},
		{name: "negative number", qname: "-1.worker." + base1, qtype: mdns.TypeA, rcode: mdns.RcodeNameError, soa: true},
		{name: "huge number", qname: "99999999999999999999.worker." + base1, qtype: mdns.TypeA, rcode: mdns.RcodeNameError, soa: true},
		{name: "number of other type", qname: "3.web." + base1, qtype: mdns.TypeA, rcode: mdns.RcodeNameError, soa: true},
		{name: "too many labels", qname: "x.1.web." + base1, qtype: mdns.TypeA, rcode: mdns.RcodeNameError, soa: true},
		{name: "type with bad char", qname: "we_b." + base1, qtype: mdns.TypeA, rcode: mdns.RcodeNameError, soa: true},
		{name: "type starting with digit", qname: "1web." + base1, qtype: mdns.TypeA, rcode: mdns.RcodeNameError, soa: true},
		{name: "malformed app", qname: "ap-123." + pnA + "." + Zone, qtype: mdns.TypeA, rcode: mdns.RcodeNameError, soa: true},
		{name: "malformed PN", qname: app1 + ".pn-1." + Zone, qtype: mdns.TypeA, rcode: mdns.RcodeNameError, soa: true},
		{name: "label that is not a PN", qname: "foo." + Zone, qtype: mdns.TypeA, rcode: mdns.RcodeNameError, soa: true},
		{name: "escaped dot in a label", qname: `web\.` + base1, qtype: mdns.TypeA, rcode: mdns.RcodeNameError, soa: true},
		{name: "DS in the zone stays local", qname: base1, qtype: mdns.TypeDS, soa: true},
		{name: "DS of the apex stays local", qname: Zone, qtype: mdns.TypeDS, soa: true},

		{name: "reverse of a container", qname: "1.0.240.10.in-addr.arpa.", qtype: mdns.TypePTR, rcode: mdns.RcodeNameError, soa: true},
		{name: "reverse upper case", qname: "1.0.240.10.IN-ADDR.ARPA.", qtype: mdns.TypePTR, rcode: mdns.RcodeNameError, soa: true},
		{name: "reverse intermediate", qname: "3.240.10.in-addr.arpa.", qtype: mdns.TypePTR, rcode: mdns.RcodeNameError, soa: true},
		{name: "reverse apex SOA", qname: "240.10.in-addr.arpa.", qtype: mdns.TypeSOA, soaAn: true},
		{name: "reverse apex PTR is NODATA", qname: "240.10.in-addr.arpa.", qtype: mdns.TypePTR, soa: true},
		{name: "reverse DS stays local", qname: "1.0.240.10.in-addr.arpa.", qtype: mdns.TypeDS, rcode: mdns.RcodeNameError, soa: true},
	}
	r := newResolver(t, Config{}) // no upstream: a forward would be SERVFAIL
	for _, tt := range tests {
		for _, tcp := range []bool{false, true} {
			name := tt.name + "/udp"
			if tcp {
				name = tt.name + "/tcp"
			}
			t.Run(name, func(t *testing.T) {
				pn := tt.pn
				if pn == "" {
					pn = pnA
				}
				w := udpWriter("10.240.0.5")
				if tcp {
					w = tcpWriter("10.240.0.5")
				}
				req := wireQuery(t, tt.qname, tt.qtype)
				m := ask(t, r.Handler(pn), w, req)
				if m.Rcode != tt.rcode {
					t.Fatalf("rcode %s, want %s\n%v", rcodeName(m.Rcode), rcodeName(tt.rcode), m)
				}
				if m.Id != req.Id || !m.Response || !m.Authoritative || !m.RecursionAvailable || m.Truncated {
					t.Errorf("header id=%d/%d qr=%v aa=%v ra=%v tc=%v", m.Id, req.Id, m.Response, m.Authoritative, m.RecursionAvailable, m.Truncated)
				}
				if len(m.Question) != 1 || m.Question[0] != req.Question[0] {
					t.Errorf("question %v, want %v", m.Question, req.Question)
				}
				got := answerAddrs(m)
				slices.Sort(got)
				if !slices.Equal(got, tt.addrs) {
					t.Errorf("addresses %v, want %v", got, tt.addrs)
				}
				for _, rr := range m.Answer {
					if a, ok := rr.(*mdns.A); ok {
						if a.Hdr.Ttl != TTL || a.Hdr.Name != tt.qname {
							t.Errorf("A record %v: want TTL %d and owner %s", a, TTL, tt.qname)
						}
					}
				}
				if tt.soaAn != (len(m.Answer) == 1 && m.Answer[0].Header().Rrtype == mdns.TypeSOA) {
					t.Errorf("SOA answer: got %v, want %v", m.Answer, tt.soaAn)
				}
				checkSOA(t, m.Ns, tt.soa)
			})
		}
	}
}

func checkSOA(t *testing.T, ns []mdns.RR, want bool) {
	t.Helper()
	if !want {
		if len(ns) != 0 {
			t.Errorf("authority %v, want empty", ns)
		}
		return
	}
	if len(ns) != 1 {
		t.Fatalf("authority %v, want one SOA", ns)
	}
	s, ok := ns[0].(*mdns.SOA)
	if !ok || s.Hdr.Ttl != 30 || s.Minttl != 5 {
		t.Errorf("authority %v, want SOA with TTL 30 and minimum 5", ns[0])
	}
}

// Several records rotate: every record comes first in turn.
func TestPrivateRotation(t *testing.T) {
	r := newResolver(t, Config{})
	h := r.Handler(pnA)
	firsts := map[string]int{}
	for range 30 {
		m := ask(t, h, udpWriter("10.240.0.5"), wireQuery(t, "worker."+app1+"."+pnA+"."+Zone, mdns.TypeA))
		got := answerAddrs(m)
		if len(got) != 3 {
			t.Fatalf("answers %v", got)
		}
		firsts[got[0]]++
	}
	if len(firsts) != 3 {
		t.Errorf("first records over 30 answers: %v, want all three", firsts)
	}
}

// The View is read live: a container attached later is answered, a
// detached one is gone.
func TestPrivateViewChanges(t *testing.T) {
	v := staticView{}
	r := newResolver(t, Config{View: v})
	h := r.Handler(pnA)
	name := app1 + "." + pnA + "." + Zone
	if m := ask(t, h, udpWriter("10.240.0.5"), wireQuery(t, name, mdns.TypeA)); m.Rcode != mdns.RcodeNameError {
		t.Fatalf("before attach: %s", rcodeName(m.Rcode))
	}
	v[pnA+"/"+app1] = []Record{rec("web", 1, "10.240.0.9"), {Type: "web", Number: 2, Addr: netip.MustParseAddr("fd00::2")}}
	m := ask(t, h, udpWriter("10.240.0.5"), wireQuery(t, name, mdns.TypeA))
	if got := answerAddrs(m); !slices.Equal(got, []string{"10.240.0.9"}) {
		t.Fatalf("after attach: %v (an IPv6 record is never an A)", got)
	}
}

func TestNameHelpers(t *testing.T) {
	for _, tt := range []struct {
		s  string
		n  int
		ok bool
	}{{"1", 1, true}, {"42", 42, true}, {"999999999", 999999999, true}, {"1000000000", 0, false}, {"0", 0, false}, {"", 0, false}, {"1a", 0, false}, {"007", 0, false}} {
		if n, ok := parseNumber(tt.s); n != tt.n || ok != tt.ok {
			t.Errorf("parseNumber(%q) = %d, %v; want %d, %v", tt.s, n, ok, tt.n, tt.ok)
		}
	}
	for _, tt := range []struct {
		name, zone string
		in         bool
	}{
		{Zone, Zone, true},
		{"a." + Zone, Zone, true},
		{"A.PRIVATE-NETWORK.INTERNAL.", Zone, true},
		{"xprivate-network.internal.", Zone, false},
		{`x\.private-network.internal.`, Zone, false},
		{`x\\.private-network.internal.`, Zone, true},
		{"internal.", Zone, false},
		{"example.com.", Zone, false},
	} {
		if got := inZone(tt.name, tt.zone); got != tt.in {
			t.Errorf("inZone(%q) = %v, want %v", tt.name, got, tt.in)
		}
	}
}
