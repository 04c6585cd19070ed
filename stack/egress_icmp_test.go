package stack

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/internal/poll"
)

// pingPermitted reports whether this process may open unprivileged ICMP
// sockets: net.ipv4.ping_group_range must include its group.
func pingPermitted() (bool, string) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ping_group_range")
	if err != nil {
		return false, err.Error()
	}
	var lo, hi int
	if _, err := fmt.Sscan(string(b), &lo, &hi); err != nil {
		return false, err.Error()
	}
	gid := os.Getgid()
	if gid < lo || gid > hi {
		return false, fmt.Sprintf("net.ipv4.ping_group_range is %d %d, gid %d is outside", lo, hi, gid)
	}
	return true, ""
}

// TestEgressPing pings 127.0.0.1 (as inet, see internetHooks) through a
// real ping socket.
func TestEgressPing(t *testing.T) {
	if ok, why := pingPermitted(); !ok {
		t.Skipf("ping sockets not permitted (%s); TestEgressPingReply covers the reply path without them", why)
	}
	s, cs := newEgressNet(t, EgressConfig{AllowLoopback: true}, nil, nil, "10.240.0.7")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := cs[0].Ping(ctx, inet); err != nil {
		t.Fatal(err)
	}
	if st := s.EgressStats(); st.PingsSent == 0 || st.PingReplies == 0 || st.PingErrors != 0 {
		t.Errorf("stats %+v", st)
	}
}

// fakePing is a ping socket that answers every echo request itself, with
// the identifier rewritten as the kernel does.
type fakePing struct {
	replies chan []byte
	closed  chan struct{}
	once    sync.Once

	mu       sync.Mutex
	deadline time.Time
}

const kernelIdent = 0xbeef

func newFakePing() *fakePing {
	return &fakePing{replies: make(chan []byte, 1), closed: make(chan struct{})}
}

func (p *fakePing) WriteTo(b []byte, to net.Addr) (int, error) {
	req := header.ICMPv4(append([]byte(nil), b...))
	if len(req) < header.ICMPv4MinimumSize || req.Type() != header.ICMPv4Echo {
		return 0, errors.New("not an echo request")
	}
	req.SetType(header.ICMPv4EchoReply)
	req.SetIdent(kernelIdent)
	req.SetChecksum(0)
	req.SetChecksum(^checksum.Checksum(req, 0))
	select {
	case p.replies <- req:
	default:
	}
	return len(b), nil
}

func (p *fakePing) ReadFrom(b []byte) (int, net.Addr, error) {
	p.mu.Lock()
	d := time.Until(p.deadline)
	p.mu.Unlock()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case r := <-p.replies:
		return copy(b, r), &net.UDPAddr{IP: inet.AsSlice()}, nil
	case <-p.closed:
		return 0, nil, net.ErrClosed
	case <-timer.C:
		return 0, nil, os.ErrDeadlineExceeded
	}
}

func (p *fakePing) Close() error {
	p.once.Do(func() { close(p.closed) })
	return nil
}

func (p *fakePing) SetDeadline(t time.Time) error {
	p.mu.Lock()
	p.deadline = t
	p.mu.Unlock()
	return nil
}

func (p *fakePing) LocalAddr() net.Addr                { return &net.UDPAddr{} }
func (p *fakePing) SetReadDeadline(t time.Time) error  { return p.SetDeadline(t) }
func (p *fakePing) SetWriteDeadline(t time.Time) error { return nil }

// TestEgressPingReply: the reply handed back carries the container's own
// identifier, not the one the kernel put in (gVisor's ping endpoint would
// not take it otherwise), and a valid IPv4/ICMP packet from the pinged
// address. Runs without ping sockets.
func TestEgressPingReply(t *testing.T) {
	s, cs := newEgressNet(t, EgressConfig{AllowLoopback: true}, nil, func(e *egress) {
		e.listenPing = func() (net.PacketConn, error) { return newFakePing(), nil }
	}, "10.240.0.7")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := cs[0].Ping(ctx, inet); err != nil {
		t.Fatal(err)
	}
	// The reply reaches the container before the counter moves.
	poll.UntilNil(t, 5*time.Second, "the ping counted", func() error {
		if st := s.EgressStats(); st.PingsSent == 0 || st.PingReplies == 0 {
			return fmt.Errorf("stats %+v", st)
		}
		return nil
	})
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	sb strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sb.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sb.String()
}

func (b *syncBuffer) lines(substr string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	sc := bufio.NewScanner(strings.NewReader(b.sb.String()))
	for sc.Scan() {
		if strings.Contains(sc.Text(), substr) {
			n++
		}
	}
	return n
}

// TestEgressPingNotPermitted: without ping sockets (EACCES, as with the
// default ping_group_range) pings go unanswered, are counted, and one
// warning names the sysctl.
func TestEgressPingNotPermitted(t *testing.T) {
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, cs := newEgressNet(t, EgressConfig{AllowLoopback: true, Logger: log}, nil, func(e *egress) {
		e.listenPing = func() (net.PacketConn, error) {
			return nil, &net.OpError{Op: "listen", Net: "ip4:icmp", Err: os.NewSyscallError("socket", syscall.EACCES)}
		}
	}, "10.240.0.7")
	for range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		err := cs[0].Ping(ctx, inet)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("ping: %v, want no answer", err)
		}
	}
	poll.Until(t, 5*time.Second, "the pings to be counted", func() bool { return s.EgressStats().PingErrors >= 2 })
	if n := logs.lines("net.ipv4.ping_group_range"); n != 1 {
		t.Errorf("%d warnings naming the sysctl, want 1:\n%s", n, logs.String())
	}
	if st := s.EgressStats(); st.PingsSent != 0 || st.PingReplies != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestEgressPingDenied: pings to refused destinations are dropped, pings to
// the resolver address are still answered by the stack itself.
func TestEgressPingDenied(t *testing.T) {
	s, cs := newEgressNet(t, EgressConfig{DenyAddrs: []netip.Addr{inet}}, nil, func(e *egress) {
		e.listenPing = func() (net.PacketConn, error) { return newFakePing(), nil }
	}, "10.240.0.7")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := cs[0].Ping(ctx, inet); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ping denied destination: %v, want no answer", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := cs[0].Ping(ctx, resolver); err != nil {
		t.Fatalf("ping resolver: %v", err)
	}
	if st := s.EgressStats(); st.Denied == 0 || st.PingsSent != 0 {
		t.Errorf("stats %+v", st)
	}
}
