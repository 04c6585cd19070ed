package dns

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"

	mdns "github.com/miekg/dns"
)

const (
	pnA  = "pn-ad0fd6a1-d05e-40ea-bf63-c4f8a75a9d8c"
	pnB  = "pn-0b1e8a7c-3f21-4d5e-9a6b-7c8d9e0f1a2b"
	app1 = "ap-a71da13f-7c70-4c00-a644-eee8558d8053"
	app2 = "ap-11111111-2222-4333-8444-555555555555" // workers only, no web
	app3 = "ap-99999999-8888-4777-a666-555555555555" // in pnB only
	appM = "ap-60606060-6060-4060-8060-606060606060" // 60 web containers
	// appX has no container anywhere.
	appX = "ap-deadbeef-0000-4000-8000-000000000000"
)

// staticView is a View from a map "pn/app" → records.
type staticView map[string][]Record

func (v staticView) Containers(pn, app string) []Record { return v[pn+"/"+app] }

func rec(typ string, n int, addr string) Record {
	return Record{Type: typ, Number: n, Addr: netip.MustParseAddr(addr)}
}

func testView() staticView {
	v := staticView{
		pnA + "/" + app1: {
			rec("web", 1, "10.240.0.1"), rec("web", 2, "10.240.0.2"),
			rec("worker", 1, "10.240.0.11"), rec("worker", 2, "10.240.0.12"), rec("worker", 3, "10.240.0.13"),
		},
		pnA + "/" + app2: {rec("worker", 1, "10.240.1.1")},
		pnB + "/" + app3: {rec("web", 1, "10.240.0.1")},
	}
	var many []Record
	for i := 1; i <= 60; i++ {
		many = append(many, Record{Type: "web", Number: i, Addr: netip.AddrFrom4([4]byte{10, 240, 2, byte(i)})})
	}
	v[pnA+"/"+appM] = many
	return v
}

// fakeWriter is a ResponseWriter without sockets: it packs every response
// (as the server would) and keeps it.
type fakeWriter struct {
	remote net.Addr

	mu   sync.Mutex
	msgs []*mdns.Msg
	wire [][]byte
	errs []error
}

var _ mdns.ResponseWriter = (*fakeWriter)(nil)

func udpWriter(ip string) *fakeWriter {
	return &fakeWriter{remote: &net.UDPAddr{IP: net.ParseIP(ip), Port: 40000}}
}

func tcpWriter(ip string) *fakeWriter {
	return &fakeWriter{remote: &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}}
}

func (w *fakeWriter) LocalAddr() net.Addr {
	return &net.UDPAddr{IP: net.IPv4(169, 254, 20, 10), Port: 53}
}
func (w *fakeWriter) RemoteAddr() net.Addr { return w.remote }
func (w *fakeWriter) WriteMsg(m *mdns.Msg) error {
	b, err := m.Pack()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, m)
	w.wire = append(w.wire, b)
	w.errs = append(w.errs, err)
	return err
}
func (w *fakeWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *fakeWriter) Close() error                { return nil }
func (w *fakeWriter) TsigStatus() error           { return nil }
func (w *fakeWriter) TsigTimersOnly(bool)         {}
func (w *fakeWriter) Hijack()                     {}

// only returns the single response written; it fails the test otherwise,
// and when the response did not pack.
func (w *fakeWriter) only(t testing.TB) (*mdns.Msg, []byte) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.msgs) != 1 {
		t.Fatalf("%d responses written, want 1", len(w.msgs))
	}
	if w.errs[0] != nil {
		t.Fatalf("response does not pack: %v\n%v", w.errs[0], w.msgs[0])
	}
	return w.msgs[0], w.wire[0]
}

// wireQuery builds a query and passes it through Pack/Unpack, so the
// handler sees what it sees from the wire.
func wireQuery(t testing.TB, name string, qtype uint16, edit ...func(*mdns.Msg)) *mdns.Msg {
	t.Helper()
	m := new(mdns.Msg).SetQuestion(name, qtype)
	for _, e := range edit {
		e(m)
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatalf("pack query %s: %v", name, err)
	}
	out := new(mdns.Msg)
	if err := out.Unpack(b); err != nil {
		t.Fatalf("unpack query %s: %v", name, err)
	}
	return out
}

func withEDNS(size uint16, do bool) func(*mdns.Msg) {
	return func(m *mdns.Msg) { m.SetEdns0(size, do) }
}

// ask sends req through h with a fresh writer and returns the response.
func ask(t testing.TB, h mdns.Handler, w *fakeWriter, req *mdns.Msg) *mdns.Msg {
	t.Helper()
	h.ServeDNS(w, req)
	m, _ := w.only(t)
	return m
}

func newResolver(t testing.TB, cfg Config) *Resolver {
	t.Helper()
	if cfg.View == nil {
		cfg.View = testView()
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func answerAddrs(m *mdns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		if a, ok := rr.(*mdns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out
}

// upstream is a fake upstream DNS server on loopback (UDP and TCP on the
// same port), answering with a function of the test.
type upstream struct {
	addr    string
	queries atomic.Int64 // requests received, UDP and TCP
	quit    chan struct{}

	mu   sync.Mutex
	seen []*mdns.Msg
}

// answerFunc answers one request; tcp tells the transport. quit is closed
// when the test ends: a blocking answer must give up then.
type answerFunc func(req *mdns.Msg, tcp bool, quit <-chan struct{}) *mdns.Msg

func startUpstream(t testing.TB, answer answerFunc) *upstream {
	t.Helper()
	u := &upstream{quit: make(chan struct{})}
	var pc net.PacketConn
	var ln net.Listener
	for try := 0; ; try++ {
		var err error
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen udp: %v", err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		if try == 10 {
			t.Fatalf("listen tcp beside udp: %v", err)
		}
	}
	u.addr = pc.LocalAddr().String()
	h := mdns.HandlerFunc(func(w mdns.ResponseWriter, req *mdns.Msg) {
		u.queries.Add(1)
		u.mu.Lock()
		u.seen = append(u.seen, req.Copy())
		u.mu.Unlock()
		_, tcp := w.RemoteAddr().(*net.TCPAddr)
		if m := answer(req, tcp, u.quit); m != nil {
			w.WriteMsg(m)
		}
	})
	var servers []*mdns.Server
	for _, srv := range []*mdns.Server{
		{PacketConn: pc, Handler: h, UDPSize: mdns.MaxMsgSize},
		{Listener: ln, Handler: h},
	} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		fin := make(chan error, 1)
		go func() { fin <- srv.ActivateAndServe() }()
		select {
		case <-started:
		case err := <-fin:
			t.Fatalf("fake upstream: %v", err)
		}
		servers = append(servers, srv)
	}
	t.Cleanup(func() {
		close(u.quit)
		for _, srv := range servers {
			srv.Shutdown()
		}
	})
	return u
}

func (u *upstream) lastQuery(t testing.TB) *mdns.Msg {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.seen) == 0 {
		t.Fatal("upstream saw no query")
	}
	return u.seen[len(u.seen)-1]
}

// answerA answers every A question with addr and ttl.
func answerA(addr string, ttl uint32) answerFunc {
	return func(req *mdns.Msg, _ bool, _ <-chan struct{}) *mdns.Msg {
		m := new(mdns.Msg).SetReply(req)
		m.Answer = append(m.Answer, &mdns.A{
			Hdr: mdns.RR_Header{Name: req.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: ttl},
			A:   net.ParseIP(addr),
		})
		return m
	}
}

// blackhole is a UDP address that receives and never answers.
func blackhole(t testing.TB) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
}

// deadPort is a loopback UDP port with nothing listening: it refuses.
func deadPort(t testing.TB) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

// pending is the number of forwarded queries in progress (tests poll it to
// know that concurrent queries have all joined).
func (r *Resolver) pendingForTest() (queries, flights int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.clients {
		queries += n
	}
	return queries, r.exchanges
}

// serveAsync runs one query on its own goroutine (as the miekg server
// would) and delivers the response.
func serveAsync(h mdns.Handler, w *fakeWriter, req *mdns.Msg) <-chan *mdns.Msg {
	out := make(chan *mdns.Msg, 1)
	go func() {
		h.ServeDNS(w, req)
		w.mu.Lock()
		defer w.mu.Unlock()
		if len(w.msgs) > 0 {
			out <- w.msgs[0]
		}
		close(out)
	}()
	return out
}

// idleForTest is a copy of the pool's idle sockets.
func (p *udpPool) idleForTest() []*upConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*upConn(nil), p.idle...)
}
