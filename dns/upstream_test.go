package dns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// rawUpstream is a UDP upstream on loopback that writes whatever datagrams
// its reply function returns (none, several, late ones) and records the
// source port of every query.
type rawUpstream struct {
	addr string
	pc   net.PacketConn

	mu    sync.Mutex
	ports []int
}

// rawReply returns the datagrams to send back for the n-th query (from 0),
// and a delay before they are sent.
type rawReply func(n int, req *mdns.Msg) (replies []*mdns.Msg, delay time.Duration)

func startRawUpstream(t *testing.T, reply rawReply) *rawUpstream {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	u := &rawUpstream{addr: pc.LocalAddr().String(), pc: pc}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 65535)
		for n := 0; ; n++ {
			size, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			req := new(mdns.Msg)
			if req.Unpack(buf[:size]) != nil {
				continue
			}
			u.mu.Lock()
			u.ports = append(u.ports, from.(*net.UDPAddr).Port)
			u.mu.Unlock()
			replies, delay := reply(n, req)
			send := func() {
				for _, m := range replies {
					b, err := m.Pack()
					if err != nil {
						t.Errorf("fake upstream: pack: %v", err)
						return
					}
					pc.WriteTo(b, from)
				}
			}
			if delay == 0 {
				send()
			} else {
				wg.Go(func() { time.Sleep(delay); send() })
			}
		}
	})
	t.Cleanup(func() {
		pc.Close()
		wg.Wait()
	})
	return u
}

func (u *rawUpstream) sourcePorts() []int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]int(nil), u.ports...)
}

// addrFor is the answer the fake upstreams give for qN.test.: 127.0.0.N,
// so that a reply relayed to the wrong query shows.
func addrFor(n int) string { return fmt.Sprintf("127.0.%d.%d", n/256, n%256) }

func qname(n int) string { return fmt.Sprintf("q%d.test.", n) }

// replyFor answers req (asked as qname(n)) with addrFor(n).
func replyFor(req *mdns.Msg) *mdns.Msg {
	var n int
	fmt.Sscanf(req.Question[0].Name, "q%d.", &n)
	return answerA(addrFor(n), 60)(req, false, nil)
}

func askN(t *testing.T, h mdns.Handler, n int) *mdns.Msg {
	t.Helper()
	return ask(t, h, udpWriter("10.240.0.5"), wireQuery(t, qname(n), mdns.TypeA))
}

func wantAddr(t *testing.T, m *mdns.Msg, n int) {
	t.Helper()
	if got := answerAddrs(m); m.Rcode != mdns.RcodeSuccess || len(got) != 1 || got[0] != addrFor(n) {
		t.Fatalf("query %d: rcode %s, answers %v, want %s", n, rcodeName(m.Rcode), got, addrFor(n))
	}
}

func distinct(ports []int) int {
	seen := map[int]bool{}
	for _, p := range ports {
		seen[p] = true
	}
	return len(seen)
}

// Sequential queries share a socket until it has served maxSocketUses
// exchanges; then a new one (a new source port) takes over.
func TestUpstreamSocketReuse(t *testing.T) {
	up := startRawUpstream(t, func(_ int, req *mdns.Msg) ([]*mdns.Msg, time.Duration) {
		return []*mdns.Msg{replyFor(req)}, 0
	})
	r := newResolver(t, Config{Upstreams: []string{up.addr}, CacheSize: -1})
	h := r.Handler(pnA)
	total := 2*maxSocketUses + 1
	for n := range total {
		wantAddr(t, askN(t, h, n), n)
	}
	ports := up.sourcePorts()
	if len(ports) != total {
		t.Fatalf("upstream saw %d queries, want %d", len(ports), total)
	}
	for i, p := range ports {
		if i%maxSocketUses != 0 && p != ports[i-1] {
			t.Errorf("query %d came from port %d, the one before from %d: socket not reused", i, p, ports[i-1])
		}
	}
	if d := distinct(ports); d != 3 {
		t.Errorf("%d queries from %d source ports, want 3 (one per %d)", total, d, maxSocketUses)
	}
}

// A socket older than maxSocketAge is closed instead of being reused.
func TestUpstreamSocketAge(t *testing.T) {
	up := startRawUpstream(t, func(_ int, req *mdns.Msg) ([]*mdns.Msg, time.Duration) {
		return []*mdns.Msg{replyFor(req)}, 0
	})
	clock := new(fakeClock)
	r := newResolver(t, Config{Upstreams: []string{up.addr}, CacheSize: -1, Now: clock.now})
	h := r.Handler(pnA)
	wantAddr(t, askN(t, h, 1), 1)
	wantAddr(t, askN(t, h, 2), 2)
	idle := r.pools[0].idleForTest()
	if len(idle) != 1 {
		t.Fatalf("%d idle sockets after two queries in a row, want 1", len(idle))
	}
	clock.advance(maxSocketAge)
	wantAddr(t, askN(t, h, 3), 3)
	ports := up.sourcePorts()
	if ports[0] != ports[1] || ports[2] == ports[1] {
		t.Errorf("source ports %v: want the first two equal, the third (after %v) new", ports, maxSocketAge)
	}
	if _, err := idle[0].conn.Write([]byte{0}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("expired socket still open: write gave %v", err)
	}
}

// Datagrams that are not the reply (another id, another question, a
// duplicate of an earlier reply) are skipped, and do not cost the socket.
func TestUpstreamStrayReplies(t *testing.T) {
	up := startRawUpstream(t, func(_ int, req *mdns.Msg) ([]*mdns.Msg, time.Duration) {
		wrongID := replyFor(req)
		wrongID.Id = req.Id + 1
		wrongQ := replyFor(req)
		wrongQ.Question = []mdns.Question{{Name: "other.test.", Qtype: mdns.TypeA, Qclass: mdns.ClassINET}}
		right := replyFor(req)
		// The duplicate of right arrives before the next query is sent:
		// that query reads it first, with the previous query's id.
		return []*mdns.Msg{wrongID, wrongQ, right, right}, 0
	})
	r := newResolver(t, Config{Upstreams: []string{up.addr}, CacheSize: -1})
	h := r.Handler(pnA)
	for n := range 5 {
		wantAddr(t, askN(t, h, n), n)
	}
	if d := distinct(up.sourcePorts()); d != 1 {
		t.Errorf("5 queries from %d source ports, want 1", d)
	}
}

// A socket whose exchange timed out is closed: the reply that comes late
// can reach no later query.
func TestUpstreamTimeoutDropsSocket(t *testing.T) {
	timeout := 200 * time.Millisecond
	up := startRawUpstream(t, func(n int, req *mdns.Msg) ([]*mdns.Msg, time.Duration) {
		if n == 0 {
			return []*mdns.Msg{replyFor(req)}, 2 * timeout
		}
		return []*mdns.Msg{replyFor(req)}, 0
	})
	r := newResolver(t, Config{Upstreams: []string{up.addr}, CacheSize: -1, Timeout: timeout})
	h := r.Handler(pnA)
	if m := askN(t, h, 1); m.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("query answered late upstream: rcode %s, want SERVFAIL", rcodeName(m.Rcode))
	}
	if n := len(r.pools[0].idleForTest()); n != 0 {
		t.Errorf("%d idle sockets after a timeout, want 0", n)
	}
	wantAddr(t, askN(t, h, 2), 2)
	if ports := up.sourcePorts(); len(ports) != 2 || ports[0] == ports[1] {
		t.Errorf("source ports %v: want a new socket after the timeout", ports)
	}
}

// Close closes the idle sockets, and a socket that comes back afterwards.
func TestUpstreamPoolClose(t *testing.T) {
	up := startRawUpstream(t, func(_ int, req *mdns.Msg) ([]*mdns.Msg, time.Duration) {
		return []*mdns.Msg{replyFor(req)}, 0
	})
	r, err := New(Config{View: testView(), Upstreams: []string{up.addr}, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	wantAddr(t, askN(t, r.Handler(pnA), 1), 1)
	p := r.pools[0]
	// Two sockets idle; one is taken out before Close and put back after.
	extra, err := p.get(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	extra2, err := p.get(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	p.put(extra)
	p.put(extra2)
	late, err := p.get(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	idle := p.idleForTest()
	if len(idle) != 1 {
		t.Fatalf("%d idle sockets, want 1", len(idle))
	}
	r.Close()
	if _, err := idle[0].conn.Write([]byte{0}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("idle socket open after Close: write gave %v", err)
	}
	p.put(late)
	if _, err := late.conn.Write([]byte{0}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("socket put back after Close still open: write gave %v", err)
	}
	if n := len(p.idleForTest()); n != 0 {
		t.Errorf("%d idle sockets after Close", n)
	}
	if _, err := p.get(t.Context()); !errors.Is(err, errClosed) {
		t.Errorf("get after Close: %v, want errClosed", err)
	}
}

// Concurrent queries each take a socket of their own; the pool keeps at
// most maxIdleSockets of them afterwards.
func TestUpstreamConcurrent(t *testing.T) {
	up := startRawUpstream(t, func(_ int, req *mdns.Msg) ([]*mdns.Msg, time.Duration) {
		return []*mdns.Msg{replyFor(req)}, 5 * time.Millisecond
	})
	r := newResolver(t, Config{Upstreams: []string{up.addr}, CacheSize: -1, MaxInflightPerClient: 128})
	h := r.Handler(pnA)
	const clients, rounds = 48, 3
	var wg sync.WaitGroup
	errs := make(chan error, clients*rounds)
	for c := range clients {
		wg.Go(func() {
			for i := range rounds {
				n := c*rounds + i
				w := udpWriter(netip.AddrFrom4([4]byte{10, 240, 1, byte(c)}).String())
				h.ServeDNS(w, wireQuery(t, qname(n), mdns.TypeA))
				w.mu.Lock()
				m := w.msgs[0]
				w.mu.Unlock()
				if got := answerAddrs(m); len(got) != 1 || got[0] != addrFor(n) {
					errs <- fmt.Errorf("query %d: %s %v, want %s", n, rcodeName(m.Rcode), got, addrFor(n))
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(r.pools[0].idleForTest()); n == 0 || n > maxIdleSockets {
		t.Errorf("%d idle sockets after %d concurrent clients, want 1…%d", n, clients, maxIdleSockets)
	}
}
