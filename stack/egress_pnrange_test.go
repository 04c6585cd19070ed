package stack

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/poll"
)

// pnRangeHooks makes e's host sockets reach the test's servers on
// 127.0.0.1 for destinations inside the private-network range, as a host
// that routes 10.240.0.0/22 somewhere would (a LAN using the same range,
// a proxy that accepts any connection). It counts the dials, which must
// never happen.
func pnRangeHooks(dials *atomic.Int32) func(*egress) {
	return func(e *egress) {
		e.dial = func(ctx context.Context, network string, dst netip.AddrPort) (net.Conn, error) {
			dials.Add(1)
			return e.hostDial(ctx, network, netip.AddrPortFrom(loopback, dst.Port()))
		}
		e.listenPing = func() (net.PacketConn, error) { return newFakePing(), nil }
	}
}

// TestEgressRefusesNetworkRange: a netstack never takes a connection, a
// datagram or a ping to an address of the private-network range, even
// with everything else allowed and a host that would reach something
// there: the container gets a RST (ECONNREFUSED), never a completed
// handshake, and nothing is dialed. The router hands a stack only
// destinations outside the range (and the resolver); a PN address that
// reaches one is no container of the sender's network (the spurious
// connects of TestEgressVNICollision, 2026-12-03).
func TestEgressRefusesNetworkRange(t *testing.T) {
	var dials atomic.Int32
	var accepted atomic.Int32
	server := listenTCP(t, func(c *net.TCPConn) { accepted.Add(1) })
	s, cs := newEgressNet(t, EgressConfig{AllowLoopback: true}, nil, pnRangeHooks(&dials), "10.240.0.7")

	for i, dst := range []string{"10.240.0.4", "10.240.0.1", "10.240.3.254", "10.240.0.7"} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := cs[0].DialTCP(ctx, netip.AddrPortFrom(netip.MustParseAddr(dst), server.Port()))
		cancel()
		if err == nil {
			conn.Close()
			t.Fatalf("TCP to %s: handshake completed, want ECONNREFUSED", dst)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("TCP to %s: %v, want ECONNREFUSED", dst, err)
		}
		if st := s.EgressStats(); st.Denied != uint64(i+1) || st.TCPDials != 0 {
			t.Fatalf("after TCP to %s: stats %+v, want %d denied and no dial", dst, st, i+1)
		}
	}

	srv := newUDPEcho(t)
	u, err := cs[0].DialUDP(netip.AddrPortFrom(netip.MustParseAddr("10.240.0.4"), srv.addr().Port()))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if _, err := u.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, "the datagram to be refused", func() bool { return s.EgressStats().Denied == 5 })

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := cs[0].Ping(ctx, netip.MustParseAddr("10.240.0.4")); err == nil {
		t.Fatal("ping 10.240.0.4 through the stack answered")
	}
	poll.Until(t, 5*time.Second, "the ping to be refused", func() bool { return s.EgressStats().Denied >= 6 })

	if st := s.EgressStats(); st.TCPDials != 0 || st.UDPFlows != 0 || st.PingsSent != 0 {
		t.Errorf("stats %+v, want no dial, flow or ping", st)
	}
	if n := dials.Load(); n != 0 {
		t.Errorf("%d host dials to the private-network range", n)
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("server accepted %d connections", n)
	}
}

func TestAllowedDstNetworkRange(t *testing.T) {
	for _, tt := range []struct {
		dst  string
		want bool
	}{
		{"10.240.0.0", false},
		{"10.240.0.4", false},
		{"10.240.3.255", false},
		{"::ffff:10.240.1.1", false},
		{"10.239.255.255", true},
		{"10.240.4.0", true},
		{"10.0.0.1", true},
	} {
		if got := allowedDst(netip.MustParseAddr(tt.dst), true, nil); got != tt.want {
			t.Errorf("allowedDst(%s) = %v, want %v", tt.dst, got, tt.want)
		}
	}
}
