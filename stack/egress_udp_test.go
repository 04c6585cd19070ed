package stack

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/poll"
)

// udpEcho is a UDP echo server on 127.0.0.1 that records the sources it
// saw.
type udpEcho struct {
	conn *net.UDPConn
	mu   sync.Mutex
	seen map[netip.AddrPort]int
}

func newUDPEcho(t *testing.T) *udpEcho {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: loopback.AsSlice()})
	if err != nil {
		t.Fatal(err)
	}
	u := &udpEcho{conn: conn, seen: map[netip.AddrPort]int{}}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			u.mu.Lock()
			u.seen[from]++
			u.mu.Unlock()
			conn.WriteToUDPAddrPort(buf[:n], from)
		}
	})
	t.Cleanup(func() {
		conn.Close()
		wg.Wait()
	})
	return u
}

// addr is where containers send to reach the server.
func (u *udpEcho) addr() netip.AddrPort {
	return inetPort(u.conn.LocalAddr().(*net.UDPAddr).AddrPort())
}

func (u *udpEcho) sources() map[netip.AddrPort]int {
	u.mu.Lock()
	defer u.mu.Unlock()
	m := make(map[netip.AddrPort]int, len(u.seen))
	for k, v := range u.seen {
		m[k] = v
	}
	return m
}

// roundTrip sends msg on conn and expects it back.
func roundTrip(t *testing.T, conn net.Conn, msg string) {
	t.Helper()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("echo of %q: %v", msg, err)
	}
	if string(buf[:n]) != msg {
		t.Fatalf("echo %q, want %q", buf[:n], msg)
	}
}

// TestEgressUDPEcho: two flows of one container each get their own host
// socket and their own answers.
func TestEgressUDPEcho(t *testing.T) {
	s, cs := newEgressNet(t, EgressConfig{AllowLoopback: true}, nil, nil, "10.240.0.7")
	srv := newUDPEcho(t)
	a, err := cs[0].DialUDP(srv.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := cs[0].DialUDP(srv.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for i := range 3 {
		roundTrip(t, a, fmt.Sprintf("a%d", i))
		roundTrip(t, b, fmt.Sprintf("b%d", i))
	}
	if st := s.EgressStats(); st.UDPFlows != 2 || st.UDPActive != 2 {
		t.Errorf("stats %+v", st)
	}
	seen := srv.sources()
	if len(seen) != 2 {
		t.Fatalf("server saw sources %v, want two", seen)
	}
	for src, n := range seen {
		if src.Addr() != loopback || n != 3 {
			t.Errorf("server saw %d datagrams from %v", n, src)
		}
	}
}

// TestEgressUDPIdle: a flow without traffic ends after the idle timeout
// (its endpoint and host socket go), and the next datagram opens a new one.
func TestEgressUDPIdle(t *testing.T) {
	s, cs := newEgressNet(t, EgressConfig{AllowLoopback: true, UDPIdleTimeout: 200 * time.Millisecond}, nil, nil, "10.240.0.7")
	srv := newUDPEcho(t)
	conn, err := cs[0].DialUDP(srv.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	roundTrip(t, conn, "one")
	poll.Until(t, 5*time.Second, "the idle flow to end", func() bool { return s.EgressStats().UDPActive == 0 })
	roundTrip(t, conn, "two")
	if st := s.EgressStats(); st.UDPFlows != 2 || st.UDPActive != 1 {
		t.Errorf("stats %+v", st)
	}
	if seen := srv.sources(); len(seen) != 2 {
		t.Errorf("server saw %v, want a new host socket for the new flow", seen)
	}
}

// TestEgressUDPFlowLimit: a flood of new flows from one container stops at
// MaxFlowsPerClient; another container is unaffected.
func TestEgressUDPFlowLimit(t *testing.T) {
	const limit, flood = 8, 40
	s, cs := newEgressNet(t, EgressConfig{AllowLoopback: true, MaxFlowsPerClient: limit}, nil, nil, "10.240.0.7", "10.240.0.8")
	srv := newUDPEcho(t)
	for i := range flood {
		conn, err := cs[0].DialUDP(srv.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.Write([]byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	poll.Until(t, 5*time.Second, "the flood to be handled", func() bool {
		st := s.EgressStats()
		return st.UDPFlows+st.Limited == flood
	})
	if st := s.EgressStats(); st.UDPFlows != limit || st.UDPActive != limit || st.Limited != flood-limit {
		t.Errorf("stats %+v", st)
	}
	other, err := cs[1].DialUDP(srv.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	roundTrip(t, other, "still works")
	poll.Until(t, 5*time.Second, "the admitted flows to reach the server", func() bool { return len(srv.sources()) == limit+1 })
}

// TestEgressUDPDenied: datagrams to refused destinations are dropped
// without a host socket.
func TestEgressUDPDenied(t *testing.T) {
	s, cs := newEgressNet(t, EgressConfig{DenyAddrs: []netip.Addr{inet}}, nil, nil, "10.240.0.7")
	srv := newUDPEcho(t)
	conn, err := cs[0].DialUDP(srv.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("x"))
	poll.Until(t, 5*time.Second, "the datagram to be refused", func() bool { return s.EgressStats().Denied == 1 })
	if st := s.EgressStats(); st.UDPFlows != 0 {
		t.Errorf("stats %+v", st)
	}
}
