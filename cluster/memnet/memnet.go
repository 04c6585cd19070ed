// Package memnet is an in-memory gossip network for tests: a
// cluster.Network whose transports carry memberlist's packets and streams
// through channels and pipes instead of UDP and TCP sockets.
//
// It behaves like loopback sockets where the cluster's tests look: a packet
// to an address nobody holds, or to a full receive queue, is dropped
// silently (UDP); a dial to such an address is refused (TCP); Shutdown
// frees the address, drops what was queued and closes every stream the
// transport took part in, as a crashed process's sockets would. So failure
// detection, restarts under a new address and refused joins work as on real
// sockets. memberlist encrypts above the transport: the cluster key is
// still checked on every packet and stream.
//
// memberlist's own MockNetwork is not used: its sends block forever once
// the receiver has shut down (so no node is ever declared dead), it routes
// by node name rather than address, and its maps are not locked.
package memnet

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/memberlist"
)

// packetQueue is how many packets a transport holds before it drops: a
// socket receive buffer's worth of gossip.
const packetQueue = 1024

// Network is one in-memory network. The zero value is ready; it must not be
// copied after first use. One Network connects the nodes of one test.
type Network struct {
	mu       sync.Mutex
	byAddr   map[netip.AddrPort]*Transport
	nextPort uint16
}

// Listen returns a transport holding addr; port 0 picks a free one. The
// address is free again once the transport is shut down.
func (n *Network) Listen(addr netip.AddrPort) (memberlist.NodeAwareTransport, error) {
	if !addr.Addr().IsValid() || addr.Addr().IsUnspecified() {
		return nil, fmt.Errorf("memnet: listen %s: need a concrete address", addr)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.byAddr == nil {
		n.byAddr = make(map[netip.AddrPort]*Transport)
	}
	if addr.Port() == 0 {
		for range 1 << 16 {
			n.nextPort++
			if n.nextPort == 0 {
				continue
			}
			cand := netip.AddrPortFrom(addr.Addr(), n.nextPort)
			if n.byAddr[cand] == nil {
				addr = cand
				break
			}
		}
		if addr.Port() == 0 {
			return nil, fmt.Errorf("memnet: listen %s: no free port", addr.Addr())
		}
	} else if n.byAddr[addr] != nil {
		return nil, fmt.Errorf("memnet: listen %s: address already in use", addr)
	}
	t := &Transport{
		net:     n,
		addr:    addr,
		packets: make(chan *memberlist.Packet, packetQueue),
		streams: make(chan net.Conn),
		done:    make(chan struct{}),
		conns:   make(map[*conn]struct{}),
	}
	n.byAddr[addr] = t
	return t, nil
}

// lookup returns the live transport at addr, or nil.
func (n *Network) lookup(addr string) (*Transport, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("memnet: address %q: %w", addr, err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.byAddr[ap], nil
}

// Transport is one node's end of a Network: a memberlist.NodeAwareTransport.
type Transport struct {
	net     *Network
	addr    netip.AddrPort
	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{}
	dropped atomic.Uint64

	mu     sync.Mutex
	conns  map[*conn]struct{} // streams with an end here, closed by Shutdown
	closed bool
}

var _ memberlist.NodeAwareTransport = (*Transport)(nil)

// Addr is the address the transport holds.
func (t *Transport) Addr() netip.AddrPort { return t.addr }

// Dropped counts packets sent to this transport that its full queue
// refused.
func (t *Transport) Dropped() uint64 { return t.dropped.Load() }

// FinalAdvertiseAddr advertises the configured address if there is one,
// else the one the transport holds, as memberlist's NetTransport does.
func (t *Transport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	adv := net.IP(t.addr.Addr().AsSlice())
	if ip != "" {
		if adv = net.ParseIP(ip); adv == nil {
			return nil, 0, fmt.Errorf("memnet: advertise address %q is not an IP", ip)
		}
	}
	if port == 0 {
		port = int(t.addr.Port())
	}
	return adv, port, nil
}

// WriteTo sends one packet; like UDP it succeeds when nobody receives it.
func (t *Transport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.isClosed() {
		return time.Time{}, fmt.Errorf("memnet: write to %s: %w", addr, net.ErrClosed)
	}
	dst, err := t.net.lookup(addr)
	if err != nil {
		return time.Time{}, err
	}
	now := time.Now()
	if dst == nil {
		return now, nil
	}
	// The caller may reuse b once WriteTo returns, as it may with a socket.
	p := &memberlist.Packet{Buf: append([]byte(nil), b...), From: net.UDPAddrFromAddrPort(t.addr), Timestamp: now}
	select {
	case <-dst.done:
	case dst.packets <- p:
	default:
		dst.dropped.Add(1)
	}
	return now, nil
}

// WriteToAddress is WriteTo: like a socket, it routes by address only.
func (t *Transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

// PacketCh delivers received packets. It is never closed: memberlist stops
// reading at its own shutdown.
func (t *Transport) PacketCh() <-chan *memberlist.Packet { return t.packets }

// DialTimeout opens a stream to addr; refused when nobody holds addr,
// timed out when the peer does not accept within timeout.
func (t *Transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	dst, err := t.net.lookup(addr)
	if err != nil {
		return nil, err
	}
	if dst == nil {
		return nil, fmt.Errorf("memnet: dial %s: %w", addr, syscall.ECONNREFUSED)
	}
	p1, p2 := net.Pipe()
	local := &conn{Conn: p1, owner: t, local: t.addr, remote: dst.addr}
	remote := &conn{Conn: p2, owner: dst, local: dst.addr, remote: t.addr}
	if !t.track(local) {
		_ = p1.Close()
		_ = p2.Close()
		return nil, fmt.Errorf("memnet: dial %s: %w", addr, net.ErrClosed)
	}
	if !dst.track(remote) {
		_ = local.Close()
		_ = p2.Close()
		return nil, fmt.Errorf("memnet: dial %s: %w", addr, syscall.ECONNREFUSED)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case dst.streams <- remote:
		return local, nil
	case <-dst.done:
		err = syscall.ECONNREFUSED
	case <-t.done:
		err = net.ErrClosed
	case <-timer.C:
		err = os.ErrDeadlineExceeded
	}
	_ = local.Close()
	_ = remote.Close()
	return nil, fmt.Errorf("memnet: dial %s: %w", addr, err)
}

// DialAddressTimeout is DialTimeout: it routes by address only.
func (t *Transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

// StreamCh delivers accepted streams. It is never closed.
func (t *Transport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown frees the address and closes every stream with an end here. It
// is idempotent.
func (t *Transport) Shutdown() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	close(t.done)
	conns := t.conns
	t.conns = nil
	t.mu.Unlock()

	t.net.mu.Lock()
	if t.net.byAddr[t.addr] == t {
		delete(t.net.byAddr, t.addr)
	}
	t.net.mu.Unlock()
	for c := range conns {
		_ = c.Conn.Close()
	}
	return nil
}

func (t *Transport) isClosed() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

// track registers c for closing at Shutdown; false once shut down.
func (t *Transport) track(c *conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *Transport) untrack(c *conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
}

// conn is one end of a stream, showing TCP addresses as a socket would.
type conn struct {
	net.Conn
	owner         *Transport
	local, remote netip.AddrPort
}

func (c *conn) LocalAddr() net.Addr  { return net.TCPAddrFromAddrPort(c.local) }
func (c *conn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(c.remote) }

func (c *conn) Close() error {
	c.owner.untrack(c)
	return c.Conn.Close()
}
