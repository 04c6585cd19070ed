package stack

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/vrouter/vrouter/internal/leaktest"
	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/stack/stacktest"
)

var resolver = netip.MustParseAddr("169.254.20.10")

// echoHandler answers every A query with the client's own address, so a
// test sees which client the stack reported.
type echoHandler struct {
	mu      sync.Mutex
	clients []net.Addr
}

func (h *echoHandler) ServeDNS(w mdns.ResponseWriter, r *mdns.Msg) {
	h.mu.Lock()
	h.clients = append(h.clients, w.RemoteAddr())
	h.mu.Unlock()
	m := new(mdns.Msg).SetReply(r)
	var ip net.IP
	switch a := w.RemoteAddr().(type) {
	case *net.UDPAddr:
		ip = a.IP
	case *net.TCPAddr:
		ip = a.IP
	}
	m.Answer = append(m.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: r.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 30}, A: ip})
	w.WriteMsg(m)
}

// wire connects a container's port to the stack in both directions, as the
// router does, until the test ends.
func wire(t *testing.T, c *stacktest.Container, s *Stack) { wireBatch(t, c, s, 8, false) }

// wireBatch is wire reading up to batch packets at once; with batched
// every Read goes to DeliverBatch, as a gateway's overlay batches do.
func wireBatch(t *testing.T, c *stacktest.Container, s *Stack, batch int, batched bool) {
	p := c.Port()
	done := make(chan struct{})
	go func() {
		defer close(done)
		bufs := make([][]byte, batch)
		sizes := make([]int, batch)
		pkts := make([][]byte, 0, batch)
		for i := range bufs {
			bufs[i] = make([]byte, router.Headroom+1500)
		}
		for {
			n, err := p.Read(bufs, sizes, router.Headroom)
			pkts = pkts[:0]
			for i := range n {
				pkt := bufs[i][router.Headroom : router.Headroom+sizes[i]]
				if !batched {
					s.Deliver(pkt)
				}
				pkts = append(pkts, pkt)
			}
			if batched && n > 0 {
				s.DeliverBatch(pkts)
			}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		p.Close()
		<-done
	})
}

// newPair builds a stack serving h and one container wired to it.
func newPair(t *testing.T, h mdns.Handler) (*Stack, *stacktest.Container) {
	t.Helper()
	leaktest.Check(t)
	c, err := stacktest.New(stacktest.Config{Addr: netip.MustParseAddr("10.240.0.7")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var cp router.Port = c.Port()
	s, err := New(Config{
		Name: "test", Addr: resolver, MTU: 1390, Headroom: router.Headroom, DNS: h,
		Output: func(bufs [][]byte, offset int) {
			if _, err := cp.Write(bufs, offset); err != nil {
				t.Logf("write to container: %v", err)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	wire(t, c, s)
	return s, c
}

func query(t *testing.T, conn net.Conn, name string) *mdns.Msg {
	t.Helper()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	dc := &mdns.Conn{Conn: conn}
	q := new(mdns.Msg).SetQuestion(name, mdns.TypeA)
	if err := dc.WriteMsg(q); err != nil {
		t.Fatal(err)
	}
	r, err := dc.ReadMsg()
	if err != nil {
		t.Fatal(err)
	}
	if r.Id != q.Id || len(r.Answer) != 1 {
		t.Fatalf("reply %v to %v", r, q)
	}
	return r
}

func TestDNSOverUDPAndTCP(t *testing.T) {
	h := &echoHandler{}
	s, c := newPair(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	uc, err := c.DialUDP(netip.AddrPortFrom(resolver, DNSPort))
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	r := query(t, uc, "x.example.")
	if a := r.Answer[0].(*mdns.A).A.String(); a != "10.240.0.7" {
		t.Fatalf("handler saw client %s over UDP, want 10.240.0.7", a)
	}

	tc, err := c.DialTCP(ctx, netip.AddrPortFrom(resolver, DNSPort))
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	for range 3 { // several queries on one connection
		r = query(t, tc, "y.example.")
	}
	if a := r.Answer[0].(*mdns.A).A.String(); a != "10.240.0.7" {
		t.Fatalf("handler saw client %s over TCP, want 10.240.0.7", a)
	}

	// The resolver address answers ping: a handy check from a container.
	if err := c.Ping(ctx, resolver); err != nil {
		t.Fatalf("ping resolver: %v", err)
	}
	st := s.Stats()
	if st.Delivered == 0 || st.Sent == 0 || st.TCPEstablished != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestNoDNS: without a handler nothing listens on port 53: a TCP connect is
// refused.
func TestNoDNS(t *testing.T) {
	_, c := newPair(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.DialTCP(ctx, netip.AddrPortFrom(resolver, DNSPort))
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial without a resolver: %v, want refused", err)
	}
}

// TestCloseWithTraffic closes the stack with a TCP connection open and
// deliveries racing: nothing panics, hangs or leaks, and Deliver after
// Close is a no-op.
func TestCloseWithTraffic(t *testing.T) {
	s, c := newPair(t, &echoHandler{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tc, err := c.DialTCP(ctx, netip.AddrPortFrom(resolver, DNSPort))
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	query(t, tc, "z.example.")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		pkt := stacktest.UDPPacket(netip.MustParseAddrPort("10.240.0.7:999"), netip.AddrPortFrom(resolver, DNSPort), []byte("junk"))
		for {
			select {
			case <-stop:
				return
			default:
				s.Deliver(pkt)
			}
		}
	})
	time.Sleep(10 * time.Millisecond)
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v", d)
	}
	s.Deliver([]byte{0x45})
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestNewErrors(t *testing.T) {
	out := func([][]byte, int) {}
	for name, cfg := range map[string]Config{
		"ipv6":      {Addr: netip.MustParseAddr("fd00::1"), MTU: 1390, Output: out},
		"no addr":   {MTU: 1390, Output: out},
		"small mtu": {Addr: resolver, MTU: 60, Output: out},
		"no output": {Addr: resolver, MTU: 1390},
		"headroom":  {Addr: resolver, MTU: 1390, Output: out, Headroom: -1},
	} {
		if s, err := New(cfg); err == nil {
			s.Close()
			t.Errorf("%s: New succeeded", name)
		}
	}
}
