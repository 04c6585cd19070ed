package stack

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// DNS over TCP: miekg's server starts a goroutine per accepted connection
// and keeps it for an idle timeout renewed by every query, so without a
// bound one container could hold tens of thousands of connections (and
// goroutines and buffers) open with a query every few seconds (AUDIT D8).
// The listener counts open connections per client address and per stack
// and closes a connection beyond either bound as soon as it is accepted:
// the client's query fails at once (EOF) and it may retry over UDP.
const (
	dnsTCPPerClient = 64
	dnsTCPTotal     = 1024
)

// dnsTCPListener bounds the connections its Accept hands out.
type dnsTCPListener struct {
	net.Listener
	perClient, total int

	mu      sync.Mutex
	open    int
	clients map[netip.Addr]int

	refused atomic.Uint64
}

func newDNSTCPListener(ln net.Listener, perClient, total int) *dnsTCPListener {
	return &dnsTCPListener{Listener: ln, perClient: perClient, total: total, clients: make(map[netip.Addr]int)}
}

// Accept returns the next connection within the bounds; those beyond are
// closed and counted.
func (l *dnsTCPListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := tcpRemoteIP(c)
		if !l.take(ip) {
			l.refused.Add(1)
			c.Close()
			continue
		}
		return &dnsTCPConn{Conn: c, l: l, ip: ip}, nil
	}
}

func (l *dnsTCPListener) take(ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open >= l.total || l.clients[ip] >= l.perClient {
		return false
	}
	l.open++
	l.clients[ip]++
	return true
}

func (l *dnsTCPListener) give(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.clients[ip] <= 1 {
		delete(l.clients, ip)
	} else {
		l.clients[ip]--
	}
}

func tcpRemoteIP(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

// dnsTCPConn gives its slot back once, on the first Close.
type dnsTCPConn struct {
	net.Conn
	l    *dnsTCPListener
	ip   netip.Addr
	once sync.Once
}

func (c *dnsTCPConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.give(c.ip) })
	return err
}
