package dns

import (
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/vrouter/vrouter/internal/leaktest"
	"github.com/vrouter/vrouter/internal/poll"
)

// fakeClock drives cache expiry.
type fakeClock struct{ off atomic.Int64 }

var clockBase = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func (c *fakeClock) now() time.Time          { return clockBase.Add(time.Duration(c.off.Load())) }
func (c *fakeClock) advance(d time.Duration) { c.off.Add(int64(d)) }

func TestForwardRelay(t *testing.T) {
	up := startUpstream(t, answerA("127.0.0.8", 60))
	r := newResolver(t, Config{Upstreams: []string{up.addr}})
	local := &mdns.EDNS0_LOCAL{Code: 65001, Data: []byte("hi")}
	cookie := &mdns.EDNS0_COOKIE{Code: mdns.EDNS0COOKIE, Cookie: "0102030405060708"}
	req := wireQuery(t, "WwW.Example.TEST.", mdns.TypeA, func(m *mdns.Msg) {
		m.Id = 4242
		m.CheckingDisabled = true
		m.SetEdns0(1232, true)
		m.IsEdns0().Option = append(m.IsEdns0().Option, local, cookie)
	})
	m := ask(t, r.Handler(pnA), udpWriter("10.240.0.5"), req)
	if m.Rcode != mdns.RcodeSuccess || !slices.Equal(answerAddrs(m), []string{"127.0.0.8"}) {
		t.Fatalf("response %v", m)
	}
	if m.Id != 4242 || !m.RecursionAvailable || m.Authoritative || !m.RecursionDesired || !m.CheckingDisabled {
		t.Errorf("header %+v", m.MsgHdr)
	}
	if m.Question[0] != req.Question[0] || m.Answer[0].Header().Ttl != 60 {
		t.Errorf("question %v / answer %v", m.Question, m.Answer)
	}
	if opt := m.IsEdns0(); opt == nil || !opt.Do() || len(m.Extra) != 1 {
		t.Errorf("extra %v: want exactly our OPT with DO", m.Extra)
	}

	seen := up.lastQuery(t)
	if seen.Question[0].Name != "WwW.Example.TEST." || !seen.RecursionDesired || !seen.CheckingDisabled {
		t.Errorf("upstream saw %v", seen)
	}
	opt := seen.IsEdns0()
	if opt == nil || !opt.Do() || opt.UDPSize() != maxUDPSize {
		t.Fatalf("upstream OPT %v", opt)
	}
	var codes []uint16
	for _, o := range opt.Option {
		codes = append(codes, o.Option())
	}
	if !slices.Equal(codes, []uint16{65001}) {
		t.Errorf("upstream got options %v, want the client's without COOKIE", codes)
	}
	if st := r.Stats(); st.Forwarded != 1 || st.Rcodes["NOERROR"] != 1 || st.Local != 0 {
		t.Errorf("stats %+v", st)
	}
	if st := r.Stats(); st.UpstreamLatency.Count != 1 || st.Inflight != 0 || st.MaxInflight != DefaultMaxInflight {
		t.Errorf("upstream exchanges observed %d, in flight %d of %d; want 1, 0 of %d",
			st.UpstreamLatency.Count, st.Inflight, st.MaxInflight, DefaultMaxInflight)
	}
}

// Each exchange has its own id, whatever the client's.
func TestForwardFreshIDs(t *testing.T) {
	up := startUpstream(t, answerA("127.0.0.8", 60))
	r := newResolver(t, Config{Upstreams: []string{up.addr}, CacheSize: -1})
	h := r.Handler(pnA)
	for range 8 {
		req := wireQuery(t, "example.test.", mdns.TypeA, func(m *mdns.Msg) { m.Id = 7 })
		if m := ask(t, h, udpWriter("10.240.0.5"), req); m.Id != 7 || m.Rcode != mdns.RcodeSuccess {
			t.Fatalf("response %v", m)
		}
	}
	ids := map[uint16]bool{}
	up.mu.Lock()
	for _, q := range up.seen {
		ids[q.Id] = true
	}
	up.mu.Unlock()
	if len(ids) < 2 {
		t.Errorf("8 exchanges used ids %v", ids)
	}
}

func TestForwardTCPRetry(t *testing.T) {
	up := startUpstream(t, func(req *mdns.Msg, tcp bool, _ <-chan struct{}) *mdns.Msg {
		m := new(mdns.Msg).SetReply(req)
		if !tcp {
			m.Truncated = true
			return m
		}
		for i := range 60 {
			m.Answer = append(m.Answer, &mdns.A{
				Hdr: mdns.RR_Header{Name: req.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60},
				A:   net.IPv4(127, 0, 1, byte(i)),
			})
		}
		return m
	})
	r := newResolver(t, Config{Upstreams: []string{up.addr}})
	h := r.Handler(pnA)

	// A TCP client gets everything.
	m := ask(t, h, tcpWriter("10.240.0.5"), wireQuery(t, "big.test.", mdns.TypeA))
	if len(m.Answer) != 60 || m.Truncated {
		t.Fatalf("TCP client: %d answers, TC=%v", len(m.Answer), m.Truncated)
	}
	if up.queries.Load() != 2 {
		t.Errorf("upstream got %d queries, want UDP then TCP", up.queries.Load())
	}
	// A UDP client without EDNS gets what fits in 512 (from the cache).
	w := udpWriter("10.240.0.5")
	h.ServeDNS(w, wireQuery(t, "big.test.", mdns.TypeA))
	m, wire := w.only(t)
	if !m.Truncated || len(m.Answer) == 0 || len(wire) > 512 {
		t.Errorf("UDP client: %d answers in %d bytes, TC=%v", len(m.Answer), len(wire), m.Truncated)
	}
	st := r.Stats()
	if st.TCPRetries != 1 || st.Forwarded != 2 || st.CacheHits != 1 || st.Truncated != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestForwardTimeout(t *testing.T) {
	leaktest.Check(t)
	hole := blackhole(t)
	r := newResolver(t, Config{Upstreams: []string{hole}, Timeout: 300 * time.Millisecond})
	start := time.Now()
	m := ask(t, r.Handler(pnA), udpWriter("10.240.0.5"), wireQuery(t, "example.test.", mdns.TypeA))
	took := time.Since(start)
	if m.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("rcode %s", rcodeName(m.Rcode))
	}
	if took < 250*time.Millisecond || took > 2*time.Second {
		t.Errorf("SERVFAIL after %v, budget 300ms", took)
	}
	if st := r.Stats(); st.UpstreamErrors != 1 || st.Rcodes["SERVFAIL"] != 1 {
		t.Errorf("stats %+v", st)
	}
	if q, f := r.pendingForTest(); q != 0 || f != 0 {
		t.Errorf("%d queries, %d flights still registered", q, f)
	}
}

func TestForwardFailover(t *testing.T) {
	good := startUpstream(t, answerA("127.0.0.9", 60))
	bad := startUpstream(t, func(req *mdns.Msg, _ bool, _ <-chan struct{}) *mdns.Msg {
		return new(mdns.Msg).SetRcode(req, mdns.RcodeServerFailure)
	})
	tests := []struct {
		name  string
		first string
		max   time.Duration
	}{
		{"refused port", deadPort(t), time.Second},
		{"blackhole gets half the budget", blackhole(t), 1500 * time.Millisecond},
		{"SERVFAIL", bad.addr, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newResolver(t, Config{Upstreams: []string{tt.first, good.addr}, Timeout: 2 * time.Second, CacheSize: -1})
			start := time.Now()
			m := ask(t, r.Handler(pnA), udpWriter("10.240.0.5"), wireQuery(t, "example.test.", mdns.TypeA))
			if !slices.Equal(answerAddrs(m), []string{"127.0.0.9"}) {
				t.Fatalf("response %v", m)
			}
			if took := time.Since(start); took > tt.max {
				t.Errorf("answered after %v", took)
			}
			if st := r.Stats(); st.UpstreamErrors != 1 || st.Forwarded != 2 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// SERVFAIL from every upstream is SERVFAIL, and it is not cached.
func TestForwardAllFail(t *testing.T) {
	bad := startUpstream(t, func(req *mdns.Msg, _ bool, _ <-chan struct{}) *mdns.Msg {
		return new(mdns.Msg).SetRcode(req, mdns.RcodeRefused)
	})
	r := newResolver(t, Config{Upstreams: []string{bad.addr, bad.addr}})
	for range 2 {
		m := ask(t, r.Handler(pnA), udpWriter("10.240.0.5"), wireQuery(t, "example.test.", mdns.TypeA))
		if m.Rcode != mdns.RcodeServerFailure {
			t.Fatalf("rcode %s", rcodeName(m.Rcode))
		}
	}
	if n := bad.queries.Load(); n != 4 {
		t.Errorf("upstream got %d queries, want 4 (nothing cached)", n)
	}
}

// An upstream's extended rcode cannot reach a client without EDNS.
func TestForwardExtendedRcode(t *testing.T) {
	up := startUpstream(t, func(req *mdns.Msg, _ bool, _ <-chan struct{}) *mdns.Msg {
		m := new(mdns.Msg).SetRcode(req, mdns.RcodeBadCookie)
		m.SetEdns0(1232, false)
		return m
	})
	r := newResolver(t, Config{Upstreams: []string{up.addr}})
	m := ask(t, r.Handler(pnA), udpWriter("10.240.0.5"), wireQuery(t, "a.test.", mdns.TypeA))
	if m.Rcode != mdns.RcodeServerFailure {
		t.Errorf("without EDNS: %s", rcodeName(m.Rcode))
	}
	m = ask(t, r.Handler(pnA), udpWriter("10.240.0.5"), wireQuery(t, "a.test.", mdns.TypeA, withEDNS(1232, false)))
	if m.Rcode != mdns.RcodeBadCookie {
		t.Errorf("with EDNS: %s", rcodeName(m.Rcode))
	}
}

func TestCache(t *testing.T) {
	up := startUpstream(t, answerA("127.0.0.8", 60))
	clk := &fakeClock{}
	r := newResolver(t, Config{Upstreams: []string{up.addr}, Now: clk.now})
	h := r.Handler(pnA)
	askTTL := func(name string, edit ...func(*mdns.Msg)) uint32 {
		t.Helper()
		m := ask(t, h, udpWriter("10.240.0.5"), wireQuery(t, name, mdns.TypeA, edit...))
		if len(m.Answer) != 1 || m.Question[0].Name != name {
			t.Fatalf("response %v", m)
		}
		return m.Answer[0].Header().Ttl
	}
	if ttl := askTTL("example.test."); ttl != 60 {
		t.Fatalf("TTL %d", ttl)
	}
	if ttl := askTTL("EXAMPLE.test."); ttl != 60 || up.queries.Load() != 1 {
		t.Fatalf("hit: TTL %d, upstream queries %d", ttl, up.queries.Load())
	}
	clk.advance(10*time.Second + 500*time.Millisecond)
	if ttl := askTTL("example.test."); ttl != 50 || up.queries.Load() != 1 {
		t.Fatalf("after 10.5 s: TTL %d, upstream queries %d", ttl, up.queries.Load())
	}
	// DO is part of the key.
	askTTL("example.test.", withEDNS(1232, true))
	if up.queries.Load() != 2 {
		t.Fatalf("DO query served from the non-DO entry")
	}
	clk.advance(50 * time.Second) // 60.5 s after the first answer
	if ttl := askTTL("example.test."); ttl != 60 || up.queries.Load() != 3 {
		t.Fatalf("after expiry: TTL %d, upstream queries %d", ttl, up.queries.Load())
	}
	if st := r.Stats(); st.CacheHits != 2 {
		t.Errorf("cache hits %d, want 2", st.CacheHits)
	}
}

func TestNegativeCache(t *testing.T) {
	up := startUpstream(t, func(req *mdns.Msg, _ bool, _ <-chan struct{}) *mdns.Msg {
		m := new(mdns.Msg).SetRcode(req, mdns.RcodeNameError)
		m.Ns = []mdns.RR{&mdns.SOA{
			Hdr: mdns.RR_Header{Name: "test.", Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: 300},
			Ns:  "ns.test.", Mbox: "h.test.", Serial: 1, Refresh: 1, Retry: 1, Expire: 1, Minttl: 20,
		}}
		return m
	})
	clk := &fakeClock{}
	r := newResolver(t, Config{Upstreams: []string{up.addr}, Now: clk.now})
	h := r.Handler(pnA)
	soaTTL := func() uint32 {
		t.Helper()
		m := ask(t, h, udpWriter("10.240.0.5"), wireQuery(t, "nope.test.", mdns.TypeA))
		if m.Rcode != mdns.RcodeNameError || len(m.Ns) != 1 {
			t.Fatalf("response %v", m)
		}
		return m.Ns[0].Header().Ttl
	}
	if ttl := soaTTL(); ttl != 20 {
		t.Errorf("negative TTL %d, want min(300, 20)", ttl)
	}
	clk.advance(5 * time.Second)
	if ttl := soaTTL(); ttl != 15 || up.queries.Load() != 1 {
		t.Errorf("cached negative: TTL %d, upstream queries %d", ttl, up.queries.Load())
	}
	clk.advance(16 * time.Second)
	if soaTTL(); up.queries.Load() != 2 {
		t.Errorf("expired negative not asked again: %d upstream queries", up.queries.Load())
	}
}

func TestNotCached(t *testing.T) {
	tests := []struct {
		name  string
		reply func(req *mdns.Msg) *mdns.Msg
		cache int
	}{
		{name: "TTL 0", reply: func(req *mdns.Msg) *mdns.Msg { return answerA("127.0.0.8", 0)(req, false, nil) }},
		{name: "NODATA without SOA", reply: func(req *mdns.Msg) *mdns.Msg { return new(mdns.Msg).SetReply(req) }},
		{name: "FORMERR", reply: func(req *mdns.Msg) *mdns.Msg { return new(mdns.Msg).SetRcode(req, mdns.RcodeFormatError) }},
		{name: "cache disabled", cache: -1, reply: func(req *mdns.Msg) *mdns.Msg { return answerA("127.0.0.8", 60)(req, false, nil) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := startUpstream(t, func(req *mdns.Msg, _ bool, _ <-chan struct{}) *mdns.Msg { return tt.reply(req) })
			r := newResolver(t, Config{Upstreams: []string{up.addr}, CacheSize: tt.cache})
			for range 2 {
				ask(t, r.Handler(pnA), udpWriter("10.240.0.5"), wireQuery(t, "x.test.", mdns.TypeA))
			}
			if n := up.queries.Load(); n != 2 {
				t.Errorf("upstream got %d queries, want 2", n)
			}
		})
	}
}

func TestCacheBoundAndTTL(t *testing.T) {
	c := newCache(2)
	now := clockBase
	msg := func(name string, ttl uint32) *mdns.Msg {
		m := new(mdns.Msg).SetQuestion(name, mdns.TypeA)
		m.Response = true
		m.Answer = []mdns.RR{&mdns.A{Hdr: mdns.RR_Header{Name: name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: ttl}, A: net.IPv4(1, 2, 3, 4)}}
		return m
	}
	key := func(name string) cacheKey { return cacheKey{name: name, qtype: mdns.TypeA, qclass: mdns.ClassINET} }
	for _, n := range []string{"a.", "b."} {
		ttl, ok := cacheTTL(msg(n, 60))
		if !ok || ttl != 60 {
			t.Fatalf("cacheTTL %d %v", ttl, ok)
		}
		c.put(key(n), msg(n, 60), ttl, now)
	}
	c.get(key("a."), now) // a is now the most recent
	c.put(key("c."), msg("c.", 60), 60, now)
	if c.get(key("b."), now) != nil || c.get(key("a."), now) == nil || c.get(key("c."), now) == nil {
		t.Errorf("LRU did not evict b")
	}
	if c.order.Len() != 2 || len(c.byKey) != 2 {
		t.Errorf("cache holds %d/%d entries, bound 2", c.order.Len(), len(c.byKey))
	}
	if ttl, ok := cacheTTL(msg("d.", 86400)); !ok || ttl != maxCacheTTL {
		t.Errorf("TTL cap: %d", ttl)
	}
	big := msg("e.", 60)
	for range 300 {
		big.Answer = append(big.Answer, big.Answer[0])
	}
	c.put(key("e."), big, 60, now)
	if c.get(key("e."), now) != nil {
		t.Errorf("a reply of %d bytes was cached", big.Len())
	}
}

// A flood of one name costs one upstream exchange.
func TestSingleflight(t *testing.T) {
	gate := make(chan struct{})
	up := startUpstream(t, func(req *mdns.Msg, tcp bool, quit <-chan struct{}) *mdns.Msg {
		select {
		case <-gate:
		case <-quit:
			return nil
		}
		return answerA("127.0.0.8", 60)(req, tcp, quit)
	})
	r := newResolver(t, Config{Upstreams: []string{up.addr}, Timeout: 10 * time.Second})
	h := r.Handler(pnA)
	const n = 20
	var outs []<-chan *mdns.Msg
	for i := range n {
		// Half from one client, half from others.
		ip := "10.240.0.5"
		if i%2 == 1 {
			ip = net.IPv4(10, 240, 1, byte(i)).String()
		}
		outs = append(outs, serveAsync(h, udpWriter(ip), wireQuery(t, "flood.test.", mdns.TypeA)))
	}
	poll.Until(t, 5*time.Second, "all queries joined", func() bool { q, f := r.pendingForTest(); return q == n && f == 1 })
	close(gate)
	for _, out := range outs {
		m := <-out
		if m == nil || !slices.Equal(answerAddrs(m), []string{"127.0.0.8"}) {
			t.Fatalf("response %v", m)
		}
	}
	if got := up.queries.Load(); got != 1 {
		t.Errorf("upstream got %d queries, want 1", got)
	}
}

// slowUpstream answers names starting with "slow" once gate is closed, and
// the others at once.
func slowUpstream(t *testing.T, gate <-chan struct{}) *upstream {
	return startUpstream(t, func(req *mdns.Msg, tcp bool, quit <-chan struct{}) *mdns.Msg {
		if strings.HasPrefix(req.Question[0].Name, "slow") {
			select {
			case <-gate:
			case <-quit:
				return nil
			}
		}
		return answerA("127.0.0.8", 60)(req, tcp, quit)
	})
}

func TestFloodPerClient(t *testing.T) {
	gate := make(chan struct{})
	up := slowUpstream(t, gate)
	r := newResolver(t, Config{Upstreams: []string{up.addr}, Timeout: 10 * time.Second, MaxInflightPerClient: 4})
	h := r.Handler(pnA)
	var outs []<-chan *mdns.Msg
	for i := range 4 {
		name := "slow" + string(rune('a'+i)) + ".test."
		outs = append(outs, serveAsync(h, udpWriter("10.240.0.5"), wireQuery(t, name, mdns.TypeA)))
	}
	poll.Until(t, 5*time.Second, "4 flights", func() bool { _, f := r.pendingForTest(); return f == 4 })

	// The same client is refused at once, for a new name or a joined one.
	for _, name := range []string{"slowz.test.", "slowa.test.", "fast.test."} {
		m := ask(t, h, udpWriter("10.240.0.5"), wireQuery(t, name, mdns.TypeA))
		if m.Rcode != mdns.RcodeServerFailure {
			t.Errorf("%s over the bound: %s", name, rcodeName(m.Rcode))
		}
	}
	// The same address in another network is another client.
	m := ask(t, r.Handler(pnB), udpWriter("10.240.0.5"), wireQuery(t, "fast.test.", mdns.TypeA))
	if !slices.Equal(answerAddrs(m), []string{"127.0.0.8"}) {
		t.Errorf("other network's client: %v", m)
	}
	// Another client still served.
	m = ask(t, h, tcpWriter("10.240.0.6"), wireQuery(t, "fast2.test.", mdns.TypeA))
	if !slices.Equal(answerAddrs(m), []string{"127.0.0.8"}) {
		t.Errorf("other client: %v", m)
	}
	if st := r.Stats(); st.Flood != 3 {
		t.Errorf("flood counter %d, want 3", st.Flood)
	}
	close(gate)
	for _, out := range outs {
		if m := <-out; m == nil || m.Rcode != mdns.RcodeSuccess {
			t.Errorf("blocked query answered %v", m)
		}
	}
	if q, f := r.pendingForTest(); q != 0 || f != 0 || len(r.clients) != 0 {
		t.Errorf("%d queries, %d flights, %d clients left", q, f, len(r.clients))
	}
}

func TestFloodTotal(t *testing.T) {
	gate := make(chan struct{})
	up := slowUpstream(t, gate)
	r := newResolver(t, Config{Upstreams: []string{up.addr}, Timeout: 10 * time.Second, MaxInflight: 2})
	h := r.Handler(pnA)
	a := serveAsync(h, udpWriter("10.240.0.5"), wireQuery(t, "slow1.test.", mdns.TypeA))
	b := serveAsync(h, udpWriter("10.240.0.6"), wireQuery(t, "slow2.test.", mdns.TypeA))
	poll.Until(t, 5*time.Second, "2 flights", func() bool { _, f := r.pendingForTest(); return f == 2 })
	m := ask(t, h, udpWriter("10.240.0.7"), wireQuery(t, "fast.test.", mdns.TypeA))
	if m.Rcode != mdns.RcodeServerFailure || r.Stats().Flood != 1 {
		t.Errorf("third exchange: %s, flood %d", rcodeName(m.Rcode), r.Stats().Flood)
	}
	if st := r.Stats(); st.Inflight != 2 || st.MaxInflight != 2 {
		t.Errorf("slots in use %d of %d, want 2 of 2", st.Inflight, st.MaxInflight)
	}
	// Joining a flight in progress needs no new exchange.
	c := serveAsync(h, udpWriter("10.240.0.7"), wireQuery(t, "slow1.test.", mdns.TypeA))
	poll.Until(t, 5*time.Second, "join", func() bool { q, _ := r.pendingForTest(); return q == 3 })
	close(gate)
	for _, out := range []<-chan *mdns.Msg{a, b, c} {
		if m := <-out; m == nil || m.Rcode != mdns.RcodeSuccess {
			t.Errorf("blocked query answered %v", m)
		}
	}
}

func TestCloseDuringExchange(t *testing.T) {
	leaktest.Check(t)
	hole := blackhole(t)
	r, err := New(Config{View: testView(), Upstreams: []string{hole}, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	h := r.Handler(pnA)
	ws := []*fakeWriter{udpWriter("10.240.0.5"), udpWriter("10.240.0.6")}
	var outs []<-chan *mdns.Msg
	for _, w := range ws { // a leader and a waiter
		outs = append(outs, serveAsync(h, w, wireQuery(t, "example.test.", mdns.TypeA)))
	}
	poll.Until(t, 5*time.Second, "both queries in flight", func() bool { q, _ := r.pendingForTest(); return q == 2 })
	start := time.Now()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Close took %v", took)
	}
	// Close returns once both have answered.
	for _, w := range ws {
		w.mu.Lock()
		if len(w.msgs) != 1 || w.msgs[0].Rcode != mdns.RcodeServerFailure {
			t.Errorf("in-flight query answered %v", w.msgs)
		}
		w.mu.Unlock()
	}
	for _, out := range outs {
		<-out
	}
	m := ask(t, h, udpWriter("10.240.0.5"), wireQuery(t, "example.test.", mdns.TypeA))
	if m.Rcode != mdns.RcodeServerFailure {
		t.Errorf("after Close: %s", rcodeName(m.Rcode))
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// An upstream cannot answer for a private name, even inside a CNAME chain.
func TestForwardDropsPrivateRecords(t *testing.T) {
	up := startUpstream(t, func(req *mdns.Msg, _ bool, _ <-chan struct{}) *mdns.Msg {
		m := new(mdns.Msg).SetReply(req)
		hdr := func(name string, typ uint16) mdns.RR_Header {
			return mdns.RR_Header{Name: name, Rrtype: typ, Class: mdns.ClassINET, Ttl: 60}
		}
		m.Answer = []mdns.RR{
			&mdns.CNAME{Hdr: hdr(req.Question[0].Name, mdns.TypeCNAME), Target: webName},
			&mdns.A{Hdr: hdr(webName, mdns.TypeA), A: net.IPv4(6, 6, 6, 6)},
		}
		m.Extra = []mdns.RR{&mdns.PTR{Hdr: hdr("1.0.240.10.in-addr.arpa.", mdns.TypePTR), Ptr: "evil.test."}}
		return m
	})
	r := newResolver(t, Config{Upstreams: []string{up.addr}})
	m := ask(t, r.Handler(pnA), udpWriter("10.240.0.5"), wireQuery(t, "alias.test.", mdns.TypeA))
	if len(m.Answer) != 1 || m.Answer[0].Header().Rrtype != mdns.TypeCNAME || len(m.Extra) != 0 {
		t.Errorf("relayed %v", m)
	}
}

// TestFloodNetworkShare: one network's queries that an upstream holds
// take at most three quarters of the flights; the last quarter stays for
// the other networks, whose queries are still answered.
func TestFloodNetworkShare(t *testing.T) {
	gate := make(chan struct{})
	up := slowUpstream(t, gate)
	r := newResolver(t, Config{Upstreams: []string{up.addr}, Timeout: 10 * time.Second, MaxInflight: 8})
	h := r.Handler(pnA)
	var outs []<-chan *mdns.Msg
	for i := range 6 {
		name := "slow" + string(rune('a'+i)) + ".test."
		outs = append(outs, serveAsync(h, udpWriter("10.240.0."+string(rune('2'+i))), wireQuery(t, name, mdns.TypeA)))
	}
	poll.Until(t, 5*time.Second, "6 flights", func() bool { _, f := r.pendingForTest(); return f == 6 })
	m := ask(t, h, udpWriter("10.240.0.9"), wireQuery(t, "slowz.test.", mdns.TypeA))
	if m.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("network over its share: %s, want SERVFAIL", rcodeName(m.Rcode))
	}
	if st := r.Stats(); st.Flood != 1 || st.FloodNetwork != 1 {
		t.Fatalf("flood %d, flood_network %d, want 1 and 1", st.Flood, st.FloodNetwork)
	}
	m = ask(t, r.Handler(pnB), udpWriter("10.240.0.2"), wireQuery(t, "fast.test.", mdns.TypeA))
	if !slices.Equal(answerAddrs(m), []string{"127.0.0.8"}) {
		t.Fatalf("other network during the flood: %v", m)
	}
	close(gate)
	for _, out := range outs {
		if m := <-out; m == nil || m.Rcode != mdns.RcodeSuccess {
			t.Errorf("blocked query answered %v", m)
		}
	}
	if _, f := r.pendingForTest(); f != 0 || len(r.netFlights) != 0 {
		t.Errorf("%d flights, %d networks left", f, len(r.netFlights))
	}
}
