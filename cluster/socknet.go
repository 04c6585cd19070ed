package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// sockNetwork is the Network of production and of the bench: a UDP socket
// and a TCP listener on the same address, as memberlist's NetTransport has,
// with one difference that matters at scale. NetTransport reads every
// datagram into a fresh 64 KiB buffer that memberlist then keeps (it
// queues the packet), so a gossip packet of a few hundred bytes costs 64
// KiB of garbage: in a profile of 100 nodes in one process that was 12 %
// of the CPU in allocation and clearing, and most of the GC's 27 % besides,
// and the GC's pauses and assists land on the goroutines that answer
// probes. Here each datagram is read into the reader's own buffer and
// handed on as a copy of its length.
type sockNetwork struct{}

// udpReadBuf holds the largest datagram; memberlist's packets are at most
// UDPBufferSize (1400) bytes, but a peer configured otherwise may send more.
const udpReadBuf = 65536

// udpRecvBuf is the socket receive buffer asked for (halved until the
// kernel accepts), as NetTransport does: bursts of gossip at 100 nodes.
const udpRecvBuf = 2 << 20

// sockTries bounds the search for a port free for both TCP and UDP when
// the caller asks for any port.
const sockTries = 10

func (sockNetwork) Listen(addr netip.AddrPort) (memberlist.NodeAwareTransport, error) {
	tries := 1
	if addr.Port() == 0 {
		tries = sockTries
	}
	var err error
	for range tries {
		var t *sockTransport
		if t, err = listenSockets(addr); err == nil {
			return t, nil
		}
	}
	return nil, err
}

// sockTransport implements memberlist.NodeAwareTransport on real sockets.
// It owns two goroutines (the UDP reader and the TCP acceptor), stopped by
// Shutdown, which memberlist calls from its own Shutdown.
type sockTransport struct {
	addr    netip.AddrPort // bound; the port is the same for TCP and UDP
	udp     *net.UDPConn
	tcp     *net.TCPListener
	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup

	readErrors   atomic.Uint64 // failed UDP reads (not counting shutdown)
	acceptErrors atomic.Uint64 // failed TCP accepts (not counting shutdown)
}

func listenSockets(addr netip.AddrPort) (*sockTransport, error) {
	tcp, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(addr))
	if err != nil {
		return nil, fmt.Errorf("gossip TCP listener on %s: %w", addr, err)
	}
	bound := netip.AddrPortFrom(addr.Addr(), uint16(tcp.Addr().(*net.TCPAddr).Port))
	udp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(bound))
	if err != nil {
		_ = tcp.Close()
		return nil, fmt.Errorf("gossip UDP socket on %s: %w", bound, err)
	}
	for size := udpRecvBuf; size > 0; size /= 2 {
		if udp.SetReadBuffer(size) == nil {
			break
		}
	}
	t := &sockTransport{
		addr:    bound,
		udp:     udp,
		tcp:     tcp,
		packets: make(chan *memberlist.Packet),
		streams: make(chan net.Conn),
		done:    make(chan struct{}),
	}
	t.wg.Add(2)
	go t.readPackets()
	go t.accept()
	return t, nil
}

func (t *sockTransport) closed() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

func (t *sockTransport) readPackets() {
	defer t.wg.Done()
	buf := make([]byte, udpReadBuf)
	for {
		n, from, err := t.udp.ReadFromUDPAddrPort(buf)
		ts := time.Now()
		if err != nil {
			if t.closed() || errors.Is(err, net.ErrClosed) {
				return
			}
			t.readErrors.Add(1)
			continue
		}
		if n < 1 {
			continue
		}
		p := &memberlist.Packet{
			Buf:       bytes.Clone(buf[:n]),
			From:      net.UDPAddrFromAddrPort(netip.AddrPortFrom(from.Addr().Unmap(), from.Port())),
			Timestamp: ts,
		}
		select {
		case t.packets <- p:
		case <-t.done:
			return
		}
	}
}

func (t *sockTransport) accept() {
	defer t.wg.Done()
	var delay time.Duration
	for {
		c, err := t.tcp.AcceptTCP()
		if err != nil {
			if t.closed() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of fds, most likely: back off as NetTransport does
			// rather than spin.
			t.acceptErrors.Add(1)
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(delay):
			case <-t.done:
				return
			}
			continue
		}
		delay = 0
		select {
		case t.streams <- c:
		case <-t.done:
			_ = c.Close()
			return
		}
	}
}

func (t *sockTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	adv := net.IP(t.addr.Addr().AsSlice())
	if ip != "" {
		if adv = net.ParseIP(ip); adv == nil {
			return nil, 0, fmt.Errorf("advertise address %q is not an IP", ip)
		}
	}
	if a4 := adv.To4(); a4 != nil {
		adv = a4
	}
	if port == 0 {
		port = int(t.addr.Port())
	}
	return adv, port, nil
}

func (t *sockTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (t *sockTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	// memberlist's addresses are "ip:port" (it resolves names at join):
	// parse without the resolver and its allocations.
	dst, err := netip.ParseAddrPort(a.Addr)
	if err != nil {
		ua, rerr := net.ResolveUDPAddr("udp", a.Addr)
		if rerr != nil {
			return time.Time{}, fmt.Errorf("gossip packet to %s: %w", a.Addr, rerr)
		}
		dst = ua.AddrPort()
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	_, err = t.udp.WriteToUDPAddrPort(b, dst)
	return time.Now(), err
}

func (t *sockTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

func (t *sockTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *sockTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.Dial("tcp", a.Addr)
}

func (t *sockTransport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown closes both sockets and waits for the reader and the acceptor.
func (t *sockTransport) Shutdown() error {
	t.once.Do(func() {
		close(t.done)
		_ = t.udp.Close()
		_ = t.tcp.Close()
	})
	t.wg.Wait()
	return nil
}
