package dns

import (
	"bytes"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// nowServer is what the stack sees of a network's handler.
type nowServer interface {
	mdns.Handler
	ServeDNSNow(w mdns.ResponseWriter, req *mdns.Msg) bool
}

// TestServeDNSNow: whatever ServeDNSNow answers it answers as ServeDNS
// does (same wire bytes, same counters), and it declines exactly the
// queries that need an upstream exchange, writing nothing and counting
// nothing for them.
func TestServeDNSNow(t *testing.T) {
	up := startUpstream(t, answerA("192.0.2.7", 300))
	r := newResolver(t, Config{Upstreams: []string{up.addr}})
	h := r.Handler(pnA).(nowServer)
	// Fill the cache for cached.example. through the blocking path.
	ask(t, h, udpWriter("10.240.0.5"), wireQuery(t, "cached.example.", mdns.TypeA))

	tests := []struct {
		name string
		req  *mdns.Msg
		now  bool // answered without blocking
	}{
		{"private name", wireQuery(t, "1.web."+webName, mdns.TypeA), true},
		{"private name, EDNS", wireQuery(t, webName, mdns.TypeA, withEDNS(1232, true)), true},
		{"private NXDOMAIN", wireQuery(t, "nope."+pnA+"."+Zone, mdns.TypeA), true},
		{"other network", wireQuery(t, app3+"."+pnB+"."+Zone, mdns.TypeA), true},
		{"reverse zone", wireQuery(t, "5.0.240.10.in-addr.arpa.", mdns.TypePTR), true},
		{"DS of a private name", wireQuery(t, webName, mdns.TypeDS), true},
		{"class CH", wireQuery(t, "version.bind.", mdns.TypeTXT, func(m *mdns.Msg) { m.Question[0].Qclass = mdns.ClassCHAOS }), true},
		{"AXFR", wireQuery(t, "example.", mdns.TypeAXFR), true},
		{"opcode NOTIFY", wireQuery(t, "example.", mdns.TypeSOA, func(m *mdns.Msg) { m.Opcode = mdns.OpcodeNotify }), true},
		{"EDNS version 1", wireQuery(t, "example.", mdns.TypeA, func(m *mdns.Msg) {
			m.SetEdns0(1232, false)
			m.IsEdns0().SetVersion(1)
		}), true},
		{"cached forwarded name", wireQuery(t, "cached.example.", mdns.TypeA), true},
		{"uncached forwarded name", wireQuery(t, "new.example.", mdns.TypeA), false},
		{"escaped dot before the zone", wireQuery(t, `x\.`+Zone, mdns.TypeA), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := r.Stats()
			wNow := udpWriter("10.240.0.5")
			if got := h.ServeDNSNow(wNow, tt.req); got != tt.now {
				t.Fatalf("ServeDNSNow = %v, want %v", got, tt.now)
			}
			if !tt.now {
				if n := len(wNow.msgs); n != 0 {
					t.Fatalf("declined, but wrote %d responses", n)
				}
				if after := r.Stats(); !sameStats(before, after) {
					t.Fatalf("declined, but counters moved: %+v → %+v", before, after)
				}
				return
			}
			_, gotNow := wNow.only(t)
			mid := r.Stats()
			wBlock := udpWriter("10.240.0.5")
			h.ServeDNS(wBlock, tt.req)
			_, gotBlock := wBlock.only(t)
			// Private A records rotate from one answer to the next:
			// then only the order of the answer section may differ.
			if !bytes.Equal(gotNow, gotBlock) && !sameAnswerSet(t, gotNow, gotBlock) {
				t.Fatalf("ServeDNSNow and ServeDNS differ:\n%x\n%x", gotNow, gotBlock)
			}
			if !sameDelta(before, mid, r.Stats()) {
				t.Fatalf("counters differ between the two paths: %+v, %+v, %+v", before, mid, r.Stats())
			}
		})
	}
	if n := up.queries.Load(); n != 1 {
		t.Fatalf("upstream saw %d queries, want 1 (the one that filled the cache)", n)
	}
}

// TestServeDNSNowNoUpstream: without upstreams a forwarded name is a
// SERVFAIL that needs no exchange.
func TestServeDNSNowNoUpstream(t *testing.T) {
	r := newResolver(t, Config{})
	h := r.Handler(pnA).(nowServer)
	w := udpWriter("10.240.0.5")
	if !h.ServeDNSNow(w, wireQuery(t, "example.", mdns.TypeA)) {
		t.Fatal("declined a query that has no upstream to go to")
	}
	if m, _ := w.only(t); m.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("rcode %s, want SERVFAIL", mdns.RcodeToString[m.Rcode])
	}
}

// TestServeDNSNowClosed: a closed resolver answers SERVFAIL at once, even
// for names that would go upstream.
func TestServeDNSNowClosed(t *testing.T) {
	r := newResolver(t, Config{Upstreams: []string{blackhole(t)}, Timeout: time.Second})
	h := r.Handler(pnA).(nowServer)
	r.Close()
	w := udpWriter("10.240.0.5")
	if !h.ServeDNSNow(w, wireQuery(t, "example.", mdns.TypeA)) {
		t.Fatal("declined a query of a closed resolver")
	}
	if m, _ := w.only(t); m.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("rcode %s, want SERVFAIL", mdns.RcodeToString[m.Rcode])
	}
}

func sameAnswerSet(t *testing.T, a, b []byte) bool {
	t.Helper()
	var ma, mb mdns.Msg
	if ma.Unpack(a) != nil || mb.Unpack(b) != nil {
		return false
	}
	if len(ma.Answer) != len(mb.Answer) {
		return false
	}
	set := map[string]int{}
	for _, rr := range ma.Answer {
		set[rr.String()]++
	}
	for _, rr := range mb.Answer {
		set[rr.String()]--
	}
	for _, n := range set {
		if n != 0 {
			return false
		}
	}
	ma.Answer, mb.Answer = nil, nil
	pa, err1 := ma.Pack()
	pb, err2 := mb.Pack()
	return err1 == nil && err2 == nil && bytes.Equal(pa, pb)
}

// sameStats reports whether no counter moved from a to b.
func sameStats(a, b Stats) bool { return sameDelta(a, a, b) }

// sameDelta reports whether the counters moved by as much from a to b as
// from b to c.
func sameDelta(a, b, c Stats) bool {
	d := func(x, y, z uint64) bool { return y-x == z-y }
	if !d(a.Local, b.Local, c.Local) || !d(a.Forwarded, b.Forwarded, c.Forwarded) ||
		!d(a.CacheHits, b.CacheHits, c.CacheHits) || !d(a.Flood, b.Flood, c.Flood) ||
		!d(a.Truncated, b.Truncated, c.Truncated) || !d(a.UpstreamErrors, b.UpstreamErrors, c.UpstreamErrors) {
		return false
	}
	keys := map[string]bool{}
	for _, s := range []Stats{a, b, c} {
		for k := range s.Rcodes {
			keys[k] = true
		}
	}
	for k := range keys {
		if !d(a.Rcodes[k], b.Rcodes[k], c.Rcodes[k]) {
			return false
		}
	}
	return true
}
