package stack

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/internal/poll"
)

// dialCounter wraps an egress's dial and records how many dials to dst
// were in progress at once.
type dialCounter struct {
	dst      netip.AddrPort
	cur, max atomic.Int32
}

func (d *dialCounter) wrap(e *egress) {
	dial := e.dial
	e.dial = func(ctx context.Context, network string, dst netip.AddrPort) (net.Conn, error) {
		if dst != d.dst {
			return dial(ctx, network, dst)
		}
		n := d.cur.Add(1)
		defer d.cur.Add(-1)
		for m := d.max.Load(); n > m && !d.max.CompareAndSwap(m, n); m = d.max.Load() {
		}
		return dial(ctx, network, dst)
	}
}

// floodDials opens n connections from c to dst at once, each giving up
// after d; it returns their errors.
func floodDials(c interface {
	DialTCP(context.Context, netip.AddrPort) (net.Conn, error)
}, dst netip.AddrPort, n int, d time.Duration) []error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			conn, err := c.DialTCP(ctx, dst)
			if conn != nil {
				conn.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	return errs
}

// TestEgressSYNFlood: a container flooding SYNs to a destination that never
// answers holds at most MaxPendingPerClient dials; the rest of its SYNs are
// ignored and counted, and another container still connects meanwhile.
func TestEgressSYNFlood(t *testing.T) {
	const perClient, flood = 4, 24
	hole := blackhole(t)
	good := listenTCP(t, func(c *net.TCPConn) { c.Write([]byte("hi")); c.Close() })
	dc := dialCounter{dst: inetPort(hole)}
	s, cs := newEgressNet(t, EgressConfig{AllowLoopback: true, MaxPendingPerClient: perClient, DialTimeout: 3 * time.Second},
		nil, dc.wrap, "10.240.0.7", "10.240.0.8")

	done := make(chan []error, 1)
	// 700 ms: before the containers retransmit their SYNs (1 s).
	go func() { done <- floodDials(cs[0], inetPort(hole), flood, 700*time.Millisecond) }()
	poll.Until(t, 5*time.Second, "the flood's dials", func() bool { return s.EgressStats().TCPDials == perClient })

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := cs[1].DialTCP(ctx, inetPort(good))
	if err != nil {
		t.Fatalf("other container during the flood: %v", err)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(conn); err != nil || string(b) != "hi" {
		t.Fatalf("other container read %q, %v", b, err)
	}
	conn.Close()

	for _, err := range <-done {
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("flood dial: %v, want no answer", err)
		}
	}
	if m := dc.max.Load(); m > perClient {
		t.Errorf("%d dials at once, limit %d", m, perClient)
	}
	if st := s.EgressStats(); st.Limited != flood-perClient || st.TCPDials != perClient+1 {
		t.Errorf("stats %+v", st)
	}
}

// TestEgressPendingDialsTotal: MaxPendingDials bounds the dials of all
// containers together.
func TestEgressPendingDialsTotal(t *testing.T) {
	const total, each = 3, 4
	hole := blackhole(t)
	dc := dialCounter{dst: inetPort(hole)}
	s, cs := newEgressNet(t, EgressConfig{AllowLoopback: true, MaxPendingDials: total, DialTimeout: 3 * time.Second},
		nil, dc.wrap, "10.240.0.7", "10.240.0.8")
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() { floodDials(c, inetPort(hole), each, 700*time.Millisecond) })
	}
	wg.Wait()
	if m := dc.max.Load(); m > total {
		t.Errorf("%d dials at once, limit %d", m, total)
	}
	if st := s.EgressStats(); st.TCPDials != total || st.Limited != 2*each-total {
		t.Errorf("stats %+v", st)
	}
}

// TestEgressTCPFlowLimit: beyond MaxFlowsPerClient connections a SYN gets a
// RST; once a connection ends there is room again.
func TestEgressTCPFlowLimit(t *testing.T) {
	s, cs := newEgressNet(t, EgressConfig{AllowLoopback: true, MaxFlowsPerClient: 2}, nil, nil, "10.240.0.7")
	dst := inetPort(listenTCP(t, func(c *net.TCPConn) {
		io.Copy(io.Discard, c)
		c.Close()
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var conns []net.Conn
	for range 2 {
		conn, err := cs[0].DialTCP(ctx, dst)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conns = append(conns, conn)
	}
	// The container's connect returns before egress has counted the flow.
	poll.Until(t, 5*time.Second, "both connections to be proxied", func() bool { return s.EgressStats().TCPActive == 2 })
	if _, err := cs[0].DialTCP(ctx, dst); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("third connection: %v, want ECONNREFUSED", err)
	}
	conns[0].Close()
	poll.Until(t, 5*time.Second, "the closed connection to end", func() bool { return s.EgressStats().TCPActive == 1 })
	conn, err := cs[0].DialTCP(ctx, dst)
	if err != nil {
		t.Fatalf("after one ended: %v", err)
	}
	conn.Close()
	if st := s.EgressStats(); st.Limited != 1 || st.TCPDials != 3 {
		t.Errorf("stats %+v", st)
	}
}

// tcpSYN builds a TCP SYN with valid checksums.
func tcpSYN(src, dst netip.AddrPort, seq uint32) []byte {
	b := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize)
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)),
		TTL:         64,
		Protocol:    uint8(header.TCPProtocolNumber),
		SrcAddr:     tcpipAddr(src.Addr()),
		DstAddr:     tcpipAddr(dst.Addr()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	tc := header.TCP(b[header.IPv4MinimumSize:])
	tc.Encode(&header.TCPFields{
		SrcPort:    src.Port(),
		DstPort:    dst.Port(),
		SeqNum:     seq,
		DataOffset: header.TCPMinimumSize,
		Flags:      header.TCPFlagSyn,
		WindowSize: 65535,
	})
	x := header.PseudoHeaderChecksum(header.TCPProtocolNumber, tcpipAddr(src.Addr()), tcpipAddr(dst.Addr()), header.TCPMinimumSize)
	tc.SetChecksum(^tc.CalculateChecksum(x))
	return b
}

// TestEgressCloseWithFlows closes a stack with an established TCP
// connection, a UDP flow, a dial in progress and a handshake the container
// never completes: Close returns promptly, the host sockets are closed,
// and (goroutineCheck, TestMain) no goroutine or packet buffer is left.
func TestEgressCloseWithFlows(t *testing.T) {
	hole := blackhole(t)
	ended := make(chan struct{}, 4)
	srv := inetPort(listenTCP(t, func(c *net.TCPConn) {
		io.Copy(io.Discard, c) // until egress closes its socket
		ended <- struct{}{}
	}))
	echo := newUDPEcho(t)
	s, cs := newEgressNet(t, EgressConfig{AllowLoopback: true, DialTimeout: time.Minute}, nil, nil, "10.240.0.7")
	c := cs[0]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	conn, err := c.DialTCP(ctx, srv)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("data")); err != nil {
		t.Fatal(err)
	}
	u, err := c.DialUDP(echo.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	roundTrip(t, u, "udp")

	dialCtx, stopDial := context.WithCancel(ctx)
	pending := make(chan error, 1)
	go func() {
		_, err := c.DialTCP(dialCtx, inetPort(hole))
		pending <- err
	}()
	// No container has 10.240.0.99: the SYN-ACK goes nowhere and the
	// handler waits in CreateEndpoint.
	s.Deliver(tcpSYN(netip.MustParseAddrPort("10.240.0.99:4000"), srv, 1))

	e := s.egress
	poll.Until(t, 5*time.Second, "all flows to be set up", func() bool {
		e.mu.Lock()
		hs, pend := len(e.handshakes), e.pendingTotal
		e.mu.Unlock()
		st := s.EgressStats()
		return st.TCPActive == 1 && st.UDPActive == 1 && hs == 1 && pend == 2
	})

	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v", d)
	}
	for range 2 { // the established connection and the handshake's
		select {
		case <-ended:
		case <-ctx.Done():
			t.Fatal("a host connection stayed open after Close")
		}
	}
	if st := s.EgressStats(); st.TCPActive != 0 || st.UDPActive != 0 {
		t.Errorf("stats after Close %+v", st)
	}
	stopDial()
	<-pending
}

// TestEgressNodeBudget: two networks' stacks share one Budget. A container
// flooding connections stops at half the node (a RST: ECONNREFUSED), its
// new UDP flows are refused with an ICMP error, counted by reason, and a
// container of the other network still connects; once the flood's
// connections end, everything is given back.
func TestEgressNodeBudget(t *testing.T) {
	b := NewBudget(BudgetLimits{FDs: 8, Memory: 1 << 30})
	s1, c1 := newEgressNet(t, EgressConfig{AllowLoopback: true, Budget: b, Network: "n1"}, nil, nil, "10.240.0.7")
	s2, c2 := newEgressNet(t, EgressConfig{AllowLoopback: true, Budget: b, Network: "n2"}, nil, nil, "10.240.0.7")
	dst := inetPort(listenTCP(t, func(c *net.TCPConn) {
		io.Copy(io.Discard, c)
		c.Close()
	}))
	echo := newUDPEcho(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 4 { // half of the node
		conn, err := c1[0].DialTCP(ctx, dst)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
	}
	if _, err := c1[0].DialTCP(ctx, dst); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("connection beyond the container's budget: %v, want ECONNREFUSED", err)
	}
	u, err := c1[0].DialUDP(echo.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if _, err := u.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	// Linux reports it to a connected socket as EHOSTUNREACH; gVisor's
	// UDP sockets ignore that code, so look at the container's stack.
	poll.Until(t, 5*time.Second, "the ICMP error refusing the udp flow", func() bool { return c1[0].DstUnreachableReceived() == 1 })
	if st := b.Stats(); st.Refused[RefusedContainerMax] != 2 || st.FDsUsed != 4 {
		t.Fatalf("budget %+v", st)
	}
	if st := s1.EgressStats(); st.Limited != 2 {
		t.Fatalf("stack stats %+v", st)
	}

	conn, err := c2[0].DialTCP(ctx, dst)
	if err != nil {
		t.Fatalf("other network during the flood: %v", err)
	}
	conn.Close()
	u2, err := c2[0].DialUDP(echo.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer u2.Close()
	roundTrip(t, u2, "other network")
	u2.Close()

	for _, c := range conns {
		c.Close()
	}
	conns = nil
	poll.Until(t, 10*time.Second, "the flows to give their budget back", func() bool {
		return s1.EgressStats().TCPActive == 0 && s2.EgressStats().TCPActive == 0 && b.Stats().FDsUsed <= 1
	})
}

// TestEgressDenyPrefixesAndServicePorts: destinations in DenyPrefixes are
// refused (a RST) and counted as denied; the daemon's own service ports on
// loopback are refused even with AllowLoopback, other loopback ports and
// the same port elsewhere are not.
func TestEgressDenyPrefixesAndServicePorts(t *testing.T) {
	open := listenTCP(t, func(c *net.TCPConn) { c.Close() })
	s, cs := newEgressNet(t, EgressConfig{
		AllowLoopback:        true,
		DenyPrefixes:         []netip.Prefix{netip.MustParsePrefix("192.0.2.0/30")},
		LoopbackServicePorts: []uint16{6060},
	}, nil, nil, "10.240.0.7")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cs[0].DialTCP(ctx, inetPort(open)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial into a denied prefix: %v, want ECONNREFUSED", err)
	}
	if st := s.EgressStats(); st.Denied != 1 || st.TCPDials != 0 {
		t.Fatalf("stats %+v, want 1 denied and no dial", st)
	}
	e := s.egress
	for _, tt := range []struct {
		dst  string
		port uint16
		want bool
	}{
		{"127.0.0.1", 6060, false},
		{"127.0.0.53", 6060, false},
		{"127.0.0.1", 6061, true},
		{"198.51.100.1", 6060, true},
		{"192.0.2.3", 80, false},
		{"192.0.2.4", 80, true},
	} {
		if got := e.allowedPort(netip.MustParseAddr(tt.dst), tt.port); got != tt.want {
			t.Errorf("allowedPort(%s, %d) = %v, want %v", tt.dst, tt.port, got, tt.want)
		}
	}
}
