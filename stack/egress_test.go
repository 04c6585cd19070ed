package stack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/internal/leaktest"
	"github.com/vrouter/vrouter/internal/poll"
	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/stack/stacktest"
)

// The "internet" of these tests is servers on 127.0.0.1; containers reach
// them through a Stack with egress, wired as the router would.
//
// Containers address that internet as inet (192.0.2.1, TEST-NET-1), and
// the egress's host sockets are redirected to 127.0.0.1 (see internetHooks):
// gVisor drops packets with a loopback source or destination arriving on a
// non-loopback NIC ("martian packets", ipv4.Options.AllowExternalLoopbackTraffic
// is off in stack.New and in stacktest), so a container cannot exchange
// packets with 127.0.0.1 through gVisor. Nothing is ever sent to 192.0.2.1:
// the hooks refuse every other destination.
var inet = netip.MustParseAddr("192.0.2.1")

var loopback = netip.AddrFrom4([4]byte{127, 0, 0, 1})

// internetHooks makes e reach inet's ports on 127.0.0.1 through the real
// host dial and ping socket code, and refuses every other destination.
func internetHooks(e *egress) {
	e.dial = func(ctx context.Context, network string, dst netip.AddrPort) (net.Conn, error) {
		if dst.Addr() != inet {
			return nil, fmt.Errorf("test: refusing to dial %v", dst)
		}
		return e.hostDial(ctx, network, netip.AddrPortFrom(loopback, dst.Port()))
	}
	e.listenPing = func() (net.PacketConn, error) {
		pc, err := e.hostListenPing()
		if err != nil {
			return nil, err
		}
		return inetPingConn{pc}, nil
	}
}

// inetPingConn sends pings for inet to 127.0.0.1 and reports the replies as
// coming from inet.
type inetPingConn struct{ net.PacketConn }

func (c inetPingConn) WriteTo(b []byte, to net.Addr) (int, error) {
	if ua, ok := to.(*net.UDPAddr); !ok || !ua.IP.Equal(inet.AsSlice()) {
		return 0, fmt.Errorf("test: refusing to ping %v", to)
	}
	return c.PacketConn.WriteTo(b, &net.UDPAddr{IP: loopback.AsSlice()})
}

func (c inetPingConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := c.PacketConn.ReadFrom(b)
	if ua, ok := from.(*net.UDPAddr); ok && ua.IP.Equal(loopback.AsSlice()) {
		from = &net.UDPAddr{IP: inet.AsSlice()}
	}
	return n, from, err
}

// inetPort is the address containers use for a server on 127.0.0.1.
func inetPort(server netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(inet, server.Port()) }

// newEgressNet builds a stack with egress (and DNS if h is set) and one
// container per address, all wired to it. Its host sockets reach inet on
// 127.0.0.1 (internetHooks); hook, if set, runs after that and before any
// packet flows, to change the egress's dial functions further.
func newEgressNet(t *testing.T, cfg EgressConfig, h mdns.Handler, hook func(*egress), addrs ...string) (*Stack, []*stacktest.Container) {
	t.Helper()
	return newEgressNetWired(t, cfg, h, hook, false, addrs...)
}

// newEgressNetWired is newEgressNet whose containers' packets reach the
// stack through DeliverBatch if batched (a gateway's NAT).
func newEgressNetWired(t *testing.T, cfg EgressConfig, h mdns.Handler, hook func(*egress), batched bool, addrs ...string) (*Stack, []*stacktest.Container) {
	t.Helper()
	leaktest.Check(t)
	var cs []*stacktest.Container
	ports := map[netip.Addr]router.Port{}
	for _, a := range addrs {
		c, err := stacktest.New(stacktest.Config{Addr: netip.MustParseAddr(a)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		cs = append(cs, c)
		ports[c.Addr()] = c.Port()
	}
	s, err := New(Config{
		Name: "egress", Addr: resolver, MTU: 1390, Headroom: router.Headroom, DNS: h, Egress: &cfg,
		// Like the router: to the container that owns the destination,
		// dropped if none does.
		Output: func(bufs [][]byte, offset int) {
			for _, b := range bufs {
				p := b[offset:]
				if len(p) < header.IPv4MinimumSize {
					continue
				}
				port := ports[netip.AddrFrom4([4]byte(p[16:20]))]
				if port == nil {
					continue
				}
				if _, err := port.Write([][]byte{b}, offset); err != nil {
					t.Logf("write to container: %v", err)
				}
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
	internetHooks(s.egress)
	if hook != nil {
		hook(s.egress)
	}
	for _, c := range cs {
		if batched {
			wireBatch(t, c, s, 64, true) // an overlay batch's worth
		} else {
			wire(t, c, s)
		}
	}
	return s, cs
}

// listenTCP starts a listener on 127.0.0.1 whose connections go to serve,
// each on its own goroutine; all are closed and waited for at cleanup.
func listenTCP(t *testing.T, serve func(*net.TCPConn)) netip.AddrPort {
	t.Helper()
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []*net.TCPConn
	)
	wg.Go(func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { serve(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

type closeWriter interface{ CloseWrite() error }

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed)})
	r.Read(b)
	return b
}

// TestEgressTCPTransfer moves a few MiB both ways at once through the
// egress proxy and checks the content; it logs the throughput.
func TestEgressTCPTransfer(t *testing.T) {
	for _, batched := range []bool{false, true} {
		t.Run(fmt.Sprintf("batched=%v", batched), func(t *testing.T) {
			s := testEgressTCPTransfer(t, batched)
			if c := s.Stats().Coalesced; batched != (c > 0) {
				t.Errorf("%d segments coalesced", c)
			}
		})
	}
}

// testEgressTCPTransfer is TestEgressTCPTransfer with the container's
// packets delivered one by one or in batches.
func testEgressTCPTransfer(t *testing.T, batched bool) *Stack {
	const size = 8 << 20
	up, down := randomBytes(size, 1), randomBytes(size, 2)
	s, cs := newEgressNetWired(t, EgressConfig{AllowLoopback: true}, nil, nil, batched, "10.240.0.7")
	srv := make(chan [32]byte, 1)
	dst := listenTCP(t, func(c *net.TCPConn) {
		var wg sync.WaitGroup
		wg.Go(func() {
			c.Write(down)
			c.CloseWrite()
		})
		h := sha256.New()
		io.Copy(h, c)
		wg.Wait()
		srv <- [32]byte(h.Sum(nil))
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	conn, err := cs[0].DialTCP(ctx, inetPort(dst))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, err := conn.Write(up); err != nil {
			t.Errorf("write: %v", err)
		}
		conn.(closeWriter).CloseWrite()
	})
	got, err := io.ReadAll(conn)
	wg.Wait()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	elapsed := time.Since(start)
	if !bytes.Equal(got, down) {
		t.Fatalf("container got %d bytes, not the %d the server sent", len(got), len(down))
	}
	select {
	case sum := <-srv:
		if sum != sha256.Sum256(up) {
			t.Fatal("server got different bytes than the container sent")
		}
	case <-ctx.Done():
		t.Fatalf("server did not finish; stats %+v %+v", s.Stats(), s.stack.Stats().TCP)
	}
	t.Logf("egress TCP: %d MiB each way at once in %v: %.0f MiB/s per direction",
		size>>20, elapsed.Round(time.Millisecond), float64(size>>20)/elapsed.Seconds())
	conn.Close()
	poll.Until(t, 5*time.Second, "the flow to end", func() bool { return s.EgressStats().TCPActive == 0 })
	if st := s.EgressStats(); st.TCPDials != 1 || st.TCPRefused != 0 || st.TCPFailed != 0 {
		t.Errorf("stats %+v", st)
	}
	return s
}

// TestEgressTCPHalfClose: a FIN goes through in each direction on its own,
// and the other direction keeps working after it.
func TestEgressTCPHalfClose(t *testing.T) {
	_, cs := newEgressNet(t, EgressConfig{AllowLoopback: true}, nil, nil, "10.240.0.7")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("container closes first", func(t *testing.T) {
		dst := listenTCP(t, func(c *net.TCPConn) {
			b, _ := io.ReadAll(c) // until the container's FIN
			c.Write([]byte("got " + string(b)))
			c.Close()
		})
		conn, err := cs[0].DialTCP(ctx, inetPort(dst))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		conn.Write([]byte("request"))
		conn.(closeWriter).CloseWrite()
		reply, err := io.ReadAll(conn)
		if err != nil || string(reply) != "got request" {
			t.Fatalf("reply %q, %v", reply, err)
		}
	})

	t.Run("server closes first", func(t *testing.T) {
		got := make(chan string, 1)
		dst := listenTCP(t, func(c *net.TCPConn) {
			c.Write([]byte("banner"))
			c.CloseWrite()
			b, _ := io.ReadAll(c) // after our FIN, the container still sends
			got <- string(b)
		})
		conn, err := cs[0].DialTCP(ctx, inetPort(dst))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		banner, err := io.ReadAll(conn)
		if err != nil || string(banner) != "banner" {
			t.Fatalf("banner %q, %v", banner, err)
		}
		if _, err := conn.Write([]byte("after EOF")); err != nil {
			t.Fatal(err)
		}
		conn.(closeWriter).CloseWrite()
		select {
		case s := <-got:
			if s != "after EOF" {
				t.Fatalf("server got %q", s)
			}
		case <-ctx.Done():
			t.Fatal("server got nothing after its FIN")
		}
	})
}

// TestEgressTCPRefused: a closed port on the destination gives the
// container ECONNREFUSED at once (a RST), not a timeout.
func TestEgressTCPRefused(t *testing.T) {
	s, cs := newEgressNet(t, EgressConfig{AllowLoopback: true}, nil, nil, "10.240.0.7")
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	dst := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	_, err = cs[0].DialTCP(ctx, inetPort(dst))
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial closed port: %v, want ECONNREFUSED", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("refusal took %v", d)
	}
	if st := s.EgressStats(); st.TCPDials != 1 || st.TCPRefused != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestEgressTCPDenied: refused destinations get a RST without any dial,
// even with a server listening there. (A loopback destination cannot be
// tried here: gVisor drops it as a martian before egress sees it.)
func TestEgressTCPDenied(t *testing.T) {
	var accepted atomic.Int32
	server := listenTCP(t, func(c *net.TCPConn) { accepted.Add(1) })
	for _, tt := range []struct {
		name string
		cfg  EgressConfig
		dst  netip.AddrPort
	}{
		{"link-local by default", EgressConfig{}, netip.MustParseAddrPort("169.254.9.9:80")},
		{"DenyAddrs", EgressConfig{AllowLoopback: true, DenyAddrs: []netip.Addr{inet}}, inetPort(server)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, cs := newEgressNet(t, tt.cfg, nil, nil, "10.240.0.7")
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := cs[0].DialTCP(ctx, tt.dst)
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("dial %v: %v, want ECONNREFUSED", tt.dst, err)
			}
			if st := s.EgressStats(); st.Denied != 1 || st.TCPDials != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("server accepted %d connections", n)
	}
}

func TestAllowedDst(t *testing.T) {
	deny := map[netip.Addr]struct{}{netip.MustParseAddr("192.0.2.1"): {}}
	for _, tt := range []struct {
		dst      string
		loopback bool
		want     bool
	}{
		{"198.51.100.7", false, true},
		{"192.0.2.1", false, false}, // DenyAddrs
		{"192.0.2.1", true, false},
		{"127.0.0.1", false, false},
		{"127.0.0.1", true, true},
		{"127.1.2.3", true, true},
		{"169.254.1.1", false, false},
		{"169.254.1.1", true, true},
		{"0.0.0.0", true, false}, // Linux's "this host"
		{"0.1.2.3", true, false},
		{"224.0.0.251", true, false},
		{"239.1.1.1", false, false},
		{"255.255.255.255", true, false},
		{"::ffff:198.51.100.7", false, true},
		{"2001:db8::1", true, false},
	} {
		if got := allowedDst(netip.MustParseAddr(tt.dst), tt.loopback, deny); got != tt.want {
			t.Errorf("allowedDst(%s, loopback %v) = %v, want %v", tt.dst, tt.loopback, got, tt.want)
		}
	}
}

// TestEgressKeepsDNS: with egress on, the resolver's own sockets still win
// over the forwarders, and the resolver address still answers as itself.
func TestEgressKeepsDNS(t *testing.T) {
	var dials atomic.Int32
	s, cs := newEgressNet(t, EgressConfig{AllowLoopback: true}, &echoHandler{}, func(e *egress) {
		dial := e.dial
		e.dial = func(ctx context.Context, network string, dst netip.AddrPort) (net.Conn, error) {
			dials.Add(1)
			return dial(ctx, network, dst)
		}
	}, "10.240.0.7")
	c := cs[0]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	uc, err := c.DialUDP(netip.AddrPortFrom(resolver, DNSPort))
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	if a := query(t, uc, "x.example.").Answer[0].(*mdns.A).A.String(); a != "10.240.0.7" {
		t.Fatalf("UDP answer %s", a)
	}
	tc, err := c.DialTCP(ctx, netip.AddrPortFrom(resolver, DNSPort))
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	query(t, tc, "y.example.")
	if err := c.Ping(ctx, resolver); err != nil {
		t.Fatalf("ping resolver: %v", err)
	}
	// Another port of the resolver address is closed, as before egress,
	// rather than dialed on the host.
	if _, err := c.DialTCP(ctx, netip.AddrPortFrom(resolver, 80)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial resolver:80: %v, want ECONNREFUSED", err)
	}
	if n := dials.Load(); n != 0 {
		t.Errorf("%d host dials for traffic to the resolver", n)
	}
	if st := s.EgressStats(); st != (EgressStats{}) {
		t.Errorf("egress stats %+v, want none", st)
	}
}

// TestEgressTCPUnreachable: a dial failing with EHOSTUNREACH reaches the
// container as an ICMP host unreachable: its connect fails at once with
// the same error.
func TestEgressTCPUnreachable(t *testing.T) {
	s, cs := newEgressNet(t, EgressConfig{AllowLoopback: true}, nil, func(e *egress) {
		e.dial = func(ctx context.Context, network string, dst netip.AddrPort) (net.Conn, error) {
			return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}
		}
	}, "10.240.0.7")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	_, err := cs[0].DialTCP(ctx, netip.AddrPortFrom(inet, 9))
	if !errors.Is(err, stacktest.ErrHostUnreachable) {
		t.Fatalf("dial: %v, want host unreachable", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v", d)
	}
	if st := s.EgressStats(); st.TCPFailed != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestEgressTCPTimeout: a dial that times out leaves the container's SYN
// unanswered (no RST): the container's own connect timeout applies.
func TestEgressTCPTimeout(t *testing.T) {
	s, cs := newEgressNet(t, EgressConfig{AllowLoopback: true, DialTimeout: 100 * time.Millisecond}, nil, func(e *egress) {
		e.dial = func(ctx context.Context, network string, dst netip.AddrPort) (net.Conn, error) {
			<-ctx.Done()
			return nil, &net.OpError{Op: "dial", Net: network, Err: ctx.Err()}
		}
	}, "10.240.0.7")
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	_, err := cs[0].DialTCP(ctx, netip.AddrPortFrom(inet, 9))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial: %v, want the container's own timeout", err)
	}
	if st := s.EgressStats(); st.TCPFailed != 1 || st.TCPRefused != 0 {
		t.Errorf("stats %+v", st)
	}
}

// blackhole listens on 127.0.0.1 with a full accept queue: the kernel
// drops further SYNs, so dials to it time out.
func blackhole(t *testing.T) netip.AddrPort {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port))
	// With backlog 0 one connection fills the queue; check that the next
	// one hangs.
	for i := range 2 {
		c, err := net.DialTimeout("tcp4", dst.String(), 200*time.Millisecond)
		if i == 0 {
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			continue
		}
		if err == nil {
			c.Close()
			t.Skip("the kernel accepted a connection beyond a full backlog")
		}
	}
	return dst
}
