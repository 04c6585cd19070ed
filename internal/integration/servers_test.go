package integration

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// ioTimeout bounds every single read or write of the test servers and
// clients, so that a lost packet fails the test instead of hanging it.
const ioTimeout = 10 * time.Second

// datagram is what a udpServer recorded.
type datagram struct {
	from    netip.AddrPort
	payload string
}

// udpServer answers every datagram with label + ":" + payload and records
// what it got.
type udpServer struct {
	label string
	pc    net.PacketConn
	done  chan struct{}
	mu    sync.Mutex
	got   []datagram
}

func startUDPServer(t *testing.T, n *node, port uint16, label string) *udpServer {
	t.Helper()
	pc, err := n.ListenUDP(port)
	if err != nil {
		t.Fatal(err)
	}
	s := &udpServer{label: label, pc: pc, done: make(chan struct{})}
	go s.serve()
	t.Cleanup(func() {
		pc.Close()
		<-s.done
	})
	return s
}

func (s *udpServer) serve() {
	defer close(s.done)
	buf := make([]byte, 65535)
	for {
		n, from, err := s.pc.ReadFrom(buf)
		if err != nil {
			return // closed
		}
		s.mu.Lock()
		s.got = append(s.got, datagram{from: from.(*net.UDPAddr).AddrPort(), payload: string(buf[:n])})
		s.mu.Unlock()
		s.pc.WriteTo(append([]byte(s.label+":"), buf[:n]...), from)
	}
}

func (s *udpServer) received() []datagram {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]datagram(nil), s.got...)
}

// udpRoundTrip sends payload from n to dst and returns the answer.
func udpRoundTrip(n *node, dst netip.AddrPort, payload string) (string, error) {
	conn, err := n.DialUDP(dst)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := conn.Write([]byte(payload)); err != nil {
		return "", fmt.Errorf("send to %v: %w", dst, err)
	}
	buf := make([]byte, 65535)
	m, err := conn.Read(buf)
	if err != nil {
		return "", fmt.Errorf("answer from %v: %w", dst, err)
	}
	return string(buf[:m]), nil
}

// tcpServer reads each connection to EOF and answers
// "<label> <sha256 hex> <length>"; it records the clients' addresses.
type tcpServer struct {
	label   string
	ln      net.Listener
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	clients []netip.AddrPort
}

func startTCPServer(t *testing.T, n *node, port uint16, label string) *tcpServer {
	t.Helper()
	ln, err := n.ListenTCP(port)
	if err != nil {
		t.Fatal(err)
	}
	s := &tcpServer{label: label, ln: ln, conns: make(map[net.Conn]struct{})}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *tcpServer) accept() {
	defer s.wg.Done()
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			return // closed
		}
		s.mu.Lock()
		s.conns[conn] = struct{}{}
		s.clients = append(s.clients, conn.RemoteAddr().(*net.TCPAddr).AddrPort())
		s.mu.Unlock()
		s.wg.Add(1)
		go s.handle(conn)
	}
}

func (s *tcpServer) handle(conn net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
		conn.Close()
	}()
	conn.SetDeadline(time.Now().Add(ioTimeout))
	h := sha256.New()
	n, err := io.Copy(h, conn)
	if err != nil {
		return
	}
	fmt.Fprintf(conn, "%s %x %d", s.label, h.Sum(nil), n)
}

func (s *tcpServer) seen() []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]netip.AddrPort(nil), s.clients...)
}

// tcpSend connects from n to dst, sends data, half-closes and returns the
// server's answer.
func tcpSend(n *node, dst netip.AddrPort, data []byte) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	conn, err := n.DialTCP(ctx, dst)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := conn.Write(data); err != nil {
		return "", fmt.Errorf("send to %v: %w", dst, err)
	}
	cw, ok := conn.(interface{ CloseWrite() error })
	if !ok {
		return "", errors.New("conn has no CloseWrite")
	}
	if err := cw.CloseWrite(); err != nil {
		return "", fmt.Errorf("half-close to %v: %w", dst, err)
	}
	answer, err := io.ReadAll(conn)
	if err != nil {
		return "", fmt.Errorf("answer from %v: %w", dst, err)
	}
	return string(answer), nil
}

// wantAnswer is what tcpServer answers for data.
func wantAnswer(label string, data []byte) string {
	return fmt.Sprintf("%s %x %d", label, sha256.Sum256(data), len(data))
}

// pingCtx is the deadline of one ping in the tests.
func pingCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 5*time.Second)
}
