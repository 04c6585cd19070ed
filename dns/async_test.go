package dns

import (
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/vrouter/vrouter/internal/leaktest"
	"github.com/vrouter/vrouter/internal/poll"
)

// asyncWriter is a fakeWriter that the handler releases with Done.
type asyncWriter struct {
	*fakeWriter
	done  chan struct{}
	calls int
	mu    sync.Mutex
}

func newAsyncWriter(ip string) *asyncWriter {
	return &asyncWriter{fakeWriter: udpWriter(ip), done: make(chan struct{})}
}

func (w *asyncWriter) Done() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls++
	if w.calls == 1 {
		close(w.done)
	}
}

// askAsync sends req through ServeDNSAsync and waits for Done; the
// handler must take the query.
func askAsync(t testing.TB, h mdns.Handler, w *asyncWriter, req *mdns.Msg) *mdns.Msg {
	t.Helper()
	if !h.(*netHandler).ServeDNSAsync(w, req) {
		t.Fatal("ServeDNSAsync declined a query without a flight to join")
	}
	select {
	case <-w.done:
	case <-time.After(10 * time.Second):
		t.Fatal("no Done within 10 s")
	}
	w.mu.Lock()
	calls := w.calls
	w.mu.Unlock()
	if calls != 1 {
		t.Fatalf("Done called %d times", calls)
	}
	m, _ := w.only(t)
	return m
}

func TestAsyncForward(t *testing.T) {
	leaktest.Check(t)
	up := startUpstream(t, answerA("127.0.0.9", 60))
	r, err := New(Config{View: testView(), Upstreams: []string{up.addr}, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h := r.Handler(pnA)
	// More queries than one socket serves, some at once: every one gets
	// its own answer, with the client's id and case.
	const n = 3 * maxSocketUses * asyncSockets
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			req := wireQuery(t, fmt.Sprintf("Q%d.Example.test.", i), mdns.TypeA)
			m := askAsync(t, h, newAsyncWriter("10.240.0.5"), req)
			if m.Id != req.Id || m.Question[0].Name != req.Question[0].Name ||
				!slices.Equal(answerAddrs(m), []string{"127.0.0.9"}) || !m.RecursionAvailable {
				t.Errorf("query %d: response %v", i, m)
			}
		})
		if i%16 == 15 {
			wg.Wait()
		}
	}
	wg.Wait()
	st := r.Stats()
	if st.Forwarded != n || st.UpstreamErrors != 0 || st.Rcodes["NOERROR"] != n {
		t.Errorf("stats %+v", st)
	}
	if q, f := r.pendingForTest(); q != 0 || f != 0 {
		t.Errorf("%d queries, %d flights still registered", q, f)
	}
	u := r.async
	u.mu.Lock()
	for _, s := range u.socks {
		if s != nil && s.uses > maxSocketUses {
			t.Errorf("a socket served %d queries, at most %d", s.uses, maxSocketUses)
		}
	}
	u.mu.Unlock()
	// The upstream saw a fresh id on every query, not the client's.
	ids := make(map[uint16]bool)
	up.mu.Lock()
	for _, q := range up.seen {
		ids[q.Id] = true
	}
	up.mu.Unlock()
	if len(ids) < n-n/50 {
		t.Errorf("%d distinct upstream ids over %d queries", len(ids), n)
	}
}

// A query with an identical one in flight is declined (it joins the
// flight through ServeDNS), having written nothing.
func TestAsyncDeclinesJoin(t *testing.T) {
	gate := make(chan struct{})
	up := slowUpstream(t, gate)
	r := newResolver(t, Config{Upstreams: []string{up.addr}})
	h := r.Handler(pnA)
	first := newAsyncWriter("10.240.0.5")
	if !h.(*netHandler).ServeDNSAsync(first, wireQuery(t, "slow.test.", mdns.TypeA)) {
		t.Fatal("first query declined")
	}
	poll.Until(t, 5*time.Second, "the flight registered", func() bool { _, f := r.pendingForTest(); return f == 1 })
	w := newAsyncWriter("10.240.0.6")
	if h.(*netHandler).ServeDNSAsync(w, wireQuery(t, "slow.test.", mdns.TypeA)) {
		t.Fatal("second query taken, want declined")
	}
	if q, _ := r.pendingForTest(); q != 1 {
		t.Errorf("%d queries registered after the decline, want 1", q)
	}
	close(gate)
	<-first.done
	if m, _ := first.only(t); m.Rcode != mdns.RcodeSuccess {
		t.Errorf("first: %s", rcodeName(m.Rcode))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.msgs) != 0 || w.calls != 0 {
		t.Errorf("declined query: %d responses, %d Done", len(w.msgs), w.calls)
	}
}

func TestAsyncTCPRetry(t *testing.T) {
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
	m := askAsync(t, r.Handler(pnA), newAsyncWriter("10.240.0.5"), wireQuery(t, "big.test.", mdns.TypeA, withEDNS(4096, false)))
	if len(m.Answer) != 60 || m.Truncated {
		t.Fatalf("%d answers, TC=%v", len(m.Answer), m.Truncated)
	}
	if up.queries.Load() != 2 {
		t.Errorf("upstream got %d queries, want UDP then TCP", up.queries.Load())
	}
	if st := r.Stats(); st.TCPRetries != 1 || st.Forwarded != 2 || st.UpstreamErrors != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestAsyncFailover(t *testing.T) {
	good := startUpstream(t, answerA("127.0.0.9", 60))
	bad := startUpstream(t, func(req *mdns.Msg, _ bool, _ <-chan struct{}) *mdns.Msg {
		return new(mdns.Msg).SetRcode(req, mdns.RcodeServerFailure)
	})
	tests := []struct {
		name  string
		first string
		min   time.Duration
		max   time.Duration
	}{
		{"refused port", deadPort(t), 0, time.Second},
		{"blackhole gets half the budget", blackhole(t), 900 * time.Millisecond, 1500 * time.Millisecond},
		{"SERVFAIL", bad.addr, 0, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaktest.Check(t)
			r, err := New(Config{View: testView(), Upstreams: []string{tt.first, good.addr}, Timeout: 2 * time.Second, CacheSize: -1})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			start := time.Now()
			m := askAsync(t, r.Handler(pnA), newAsyncWriter("10.240.0.5"), wireQuery(t, "example.test.", mdns.TypeA))
			if !slices.Equal(answerAddrs(m), []string{"127.0.0.9"}) {
				t.Fatalf("response %v", m)
			}
			if took := time.Since(start); took < tt.min || took > tt.max {
				t.Errorf("answered after %v, want %v–%v", took, tt.min, tt.max)
			}
			if st := r.Stats(); st.UpstreamErrors != 1 || st.Forwarded != 2 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func TestAsyncTimeout(t *testing.T) {
	leaktest.Check(t)
	hole := blackhole(t)
	r, err := New(Config{View: testView(), Upstreams: []string{hole}, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	start := time.Now()
	m := askAsync(t, r.Handler(pnA), newAsyncWriter("10.240.0.5"), wireQuery(t, "example.test.", mdns.TypeA))
	took := time.Since(start)
	if m.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("rcode %s", rcodeName(m.Rcode))
	}
	if took < 290*time.Millisecond || took > 2*time.Second {
		t.Errorf("SERVFAIL after %v, budget 300ms", took)
	}
	if st := r.Stats(); st.UpstreamErrors != 1 || st.Rcodes["SERVFAIL"] != 1 {
		t.Errorf("stats %+v", st)
	}
	if q, f := r.pendingForTest(); q != 0 || f != 0 {
		t.Errorf("%d queries, %d flights still registered", q, f)
	}
}

func TestAsyncCloseDuringExchange(t *testing.T) {
	leaktest.Check(t)
	hole := blackhole(t)
	r, err := New(Config{View: testView(), Upstreams: []string{hole}, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	h := r.Handler(pnA).(*netHandler)
	var ws []*asyncWriter
	for i := range 4 {
		w := newAsyncWriter("10.240.0.5")
		if !h.ServeDNSAsync(w, wireQuery(t, fmt.Sprintf("q%d.test.", i), mdns.TypeA)) {
			t.Fatal("declined")
		}
		ws = append(ws, w)
	}
	start := time.Now()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Close took %v", took)
	}
	for _, w := range ws {
		select {
		case <-w.done:
		default:
			t.Fatal("Close returned before Done")
		}
		if m, _ := w.only(t); m.Rcode != mdns.RcodeServerFailure {
			t.Errorf("in-flight query answered %s", rcodeName(m.Rcode))
		}
	}
	m := askAsync(t, h, newAsyncWriter("10.240.0.5"), wireQuery(t, "late.test.", mdns.TypeA))
	if m.Rcode != mdns.RcodeServerFailure {
		t.Errorf("after Close: %s", rcodeName(m.Rcode))
	}
}
