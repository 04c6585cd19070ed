package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// Upstream sockets. A connected UDP socket per exchange (socket, connect,
// netpoll registration, close) was about a third of the daemon's CPU for
// an uncached forwarded name, so each upstream keeps a small pool of them.
//
// A pooled socket serves one exchange at a time: the reply it reads belongs
// to the one query waiting on it, with no reader goroutine to demultiplex
// replies and no lock held across an exchange. A socket whose exchange
// failed in any way (timeout, cancellation, error, malformed reply) is
// closed, not pooled, so that a late reply never reaches the next query as
// anything but a stray datagram with the wrong id (which exchange skips).
//
// Reuse makes the source port less of a secret than a fresh port per
// query (RFC 5452 counts on id and port both being unpredictable), so a
// socket serves at most maxSocketUses exchanges and lives at most
// maxSocketAge: the ports keep changing at a small fraction of the old
// cost. CoreDNS's forward plugin reuses its upstream sockets the same way
// (with an expiry of 10 s).
const (
	maxSocketUses = 64
	maxSocketAge  = 10 * time.Second
	// maxIdleSockets bounds the sockets kept per upstream between
	// exchanges; more may be open while more exchanges are in flight (the
	// resolver's in-flight bound caps them).
	maxIdleSockets = 32
)

// udpPool holds the idle sockets of one upstream.
type udpPool struct {
	addr string
	now  func() time.Time

	mu     sync.Mutex
	idle   []*upConn // at most maxIdleSockets, most recently returned last
	closed bool
}

// upConn is one connected socket and its buffer (a query is packed into
// it, then the reply read into it).
type upConn struct {
	conn  *net.UDPConn
	born  time.Time
	uses  int
	buf   []byte
	spent bool // not to be reused: its exchange was cut short
}

func newUDPPool(addr string, now func() time.Time) *udpPool {
	return &udpPool{addr: addr, now: now}
}

// get returns an idle socket or dials a new one.
func (p *udpPool) get(ctx context.Context) (*upConn, error) {
	now := p.now()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errClosed
	}
	for n := len(p.idle); n > 0; n-- {
		c := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		if !c.expired(now) {
			p.mu.Unlock()
			return c, nil
		}
		c.conn.Close()
	}
	p.mu.Unlock()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", p.addr)
	if err != nil {
		return nil, fmt.Errorf("dial udp %s: %w", p.addr, err)
	}
	return &upConn{conn: conn.(*net.UDPConn), born: now, buf: make([]byte, maxUDPSize)}, nil
}

// put takes back c after a successful exchange, or closes it when it has
// served its share, is too old, or the pool is full or closed. It also
// closes the idle sockets past their age, so that a pool that went quiet
// does not keep stale ports open until the next query.
func (p *udpPool) put(c *upConn) {
	c.uses++
	now := p.now()
	var stale [maxIdleSockets]*upConn
	p.mu.Lock()
	kept, n := p.idle[:0], 0
	for _, s := range p.idle {
		if s.expired(now) {
			stale[n] = s
			n++
		} else {
			kept = append(kept, s)
		}
	}
	clear(p.idle[len(kept):])
	p.idle = kept
	keep := !p.closed && !c.spent && c.uses < maxSocketUses && !c.expired(now) && len(p.idle) < maxIdleSockets
	if keep {
		p.idle = append(p.idle, c)
	}
	p.mu.Unlock()
	if !keep {
		c.conn.Close()
	}
	for _, s := range stale[:n] {
		s.conn.Close()
	}
}

func (c *upConn) expired(now time.Time) bool { return now.Sub(c.born) >= maxSocketAge }

// close closes the idle sockets; those in use are closed when they are
// put back.
func (p *udpPool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.closed = true
	p.mu.Unlock()
	for _, c := range idle {
		c.conn.Close()
	}
}

// exchangeUDP sends q to the pool's upstream with a fresh id and returns
// its reply, with the semantics of exchange over UDP.
func (p *udpPool) exchangeUDP(ctx context.Context, q *mdns.Msg) (*mdns.Msg, error) {
	c, err := p.get(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := c.exchange(ctx, q)
	if err != nil {
		c.conn.Close()
		return nil, fmt.Errorf("udp %s: %w", p.addr, err)
	}
	p.put(c)
	return resp, nil
}

// exchange is one query on c. Close interrupts a blocked read at once
// through ctx; c is not reused after any error.
func (c *upConn) exchange(ctx context.Context, q *mdns.Msg) (*mdns.Msg, error) {
	dl, _ := ctx.Deadline() // none: the zero time, no deadline
	if err := c.conn.SetDeadline(dl); err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	resp, err := c.roundTrip(q)
	if !stop() {
		// ctx ended during the exchange: the deadline may be in the past
		// by now (or about to be), so the socket is not for the next one.
		c.spent = true
	}
	return resp, err
}

func (c *upConn) roundTrip(q *mdns.Msg) (*mdns.Msg, error) {
	q.Id = mdns.Id()
	b, err := q.PackBuffer(c.buf)
	if err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	if _, err := c.conn.Write(b); err != nil {
		return nil, fmt.Errorf("send: %w", err)
	}
	for range maxStray {
		n, err := c.conn.Read(c.buf[:cap(c.buf)])
		if err != nil {
			return nil, fmt.Errorf("read: %w", err)
		}
		resp := new(mdns.Msg)
		err = resp.Unpack(c.buf[:n])
		switch {
		case err != nil && n >= dnsHeaderLen && resp.Id == q.Id:
			return nil, fmt.Errorf("%w: %v", errMalformed, err)
		case err == nil && resp.Id == q.Id && resp.Response && sameQuestion(resp, q):
			return resp, nil
		}
		// A stray datagram (a duplicate, or a spoofing attempt): keep
		// reading until the deadline.
	}
	return nil, errors.New("too many stray replies")
}

// dnsHeaderLen is the size of a DNS header: shorter replies carry no id.
const dnsHeaderLen = 12
