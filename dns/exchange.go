package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	mdns "github.com/miekg/dns"
)

// maxStray bounds the datagrams one UDP exchange reads that are not its
// reply (late replies to an earlier exchange, spoofing attempts).
const maxStray = 8

// errMalformed marks a reply with our id that did not unpack: over UDP it
// may have been cut to the buffer size, so it is retried over TCP.
var errMalformed = errors.New("malformed reply")

// exchangeAll forwards req to the upstreams in order until one answers,
// within ctx's deadline. Each upstream gets an equal share of what is left
// of the budget, so a dead first upstream cannot starve the others.
func (r *Resolver) exchangeAll(ctx context.Context, req *mdns.Msg) (*mdns.Msg, error) {
	return r.exchangeFrom(ctx, req, 0)
}

// exchangeFrom is exchangeAll from upstreams[first] on (the asynchronous
// path has asked the ones before).
func (r *Resolver) exchangeFrom(ctx context.Context, req *mdns.Msg, first int) (*mdns.Msg, error) {
	q := upstreamQuery(req)
	deadline, _ := ctx.Deadline()
	err := error(context.DeadlineExceeded)
	for i := first; i < len(r.upstreams); i++ {
		up := r.upstreams[i]
		left := time.Until(deadline)
		if left <= 0 || ctx.Err() != nil {
			break
		}
		actx, cancel := context.WithTimeout(ctx, left/time.Duration(len(r.upstreams)-i))
		var resp *mdns.Msg
		start := time.Now()
		resp, err = r.exchangeWith(actx, r.pools[i], q)
		r.stats.upstream.Observe(time.Since(start))
		cancel()
		if err == nil {
			normalize(resp)
			return resp, nil
		}
		r.stats.upstreamErrors.Add(1)
		r.log.Debug("dns: upstream failed", "upstream", up, "name", q.Question[0].Name, "err", err)
	}
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	return nil, fmt.Errorf("forward %s: %w", q.Question[0].Name, err)
}

// contextUntil is context.WithDeadline; the asynchronous path keeps its
// budget as instants rather than as a context.
func contextUntil(parent context.Context, t time.Time) (context.Context, context.CancelFunc) {
	return context.WithDeadline(parent, t)
}

// exchangeWith asks one upstream: UDP, then TCP if the UDP reply was
// truncated. SERVFAIL and REFUSED count as failures, so the next upstream
// is tried.
func (r *Resolver) exchangeWith(ctx context.Context, pool *udpPool, q *mdns.Msg) (*mdns.Msg, error) {
	up := pool.addr
	r.stats.forwarded.Add(1)
	resp, err := pool.exchangeUDP(ctx, q)
	if err == nil && resp.Truncated || errors.Is(err, errMalformed) {
		r.stats.tcpRetries.Add(1)
		r.stats.forwarded.Add(1)
		resp, err = exchangeTCP(ctx, up, q)
	}
	if err != nil {
		return nil, err
	}
	if resp.Rcode == mdns.RcodeServerFailure || resp.Rcode == mdns.RcodeRefused {
		return nil, fmt.Errorf("upstream %s answered %s", up, rcodeName(resp.Rcode))
	}
	return resp, nil
}

// exchangeTCP sends q to addr over a new TCP connection with a fresh id
// and returns the reply. It honours ctx's deadline and its cancellation:
// Close interrupts a blocked read at once. (UDP goes through udpPool.)
func exchangeTCP(ctx context.Context, addr string, q *mdns.Msg) (*mdns.Msg, error) {
	const network = "tcp"
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s %s: %w", network, addr, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	q.Id = mdns.Id()
	co := &mdns.Conn{Conn: conn, UDPSize: maxUDPSize}
	if err := co.WriteMsg(q); err != nil {
		return nil, fmt.Errorf("send to %s %s: %w", network, addr, err)
	}
	resp, err := co.ReadMsg()
	switch {
	case err != nil && resp != nil && resp.Id == q.Id:
		return nil, fmt.Errorf("%s %s: %w: %v", network, addr, errMalformed, err)
	case err != nil:
		return nil, fmt.Errorf("read from %s %s: %w", network, addr, err)
	case resp.Id == q.Id && resp.Response && sameQuestion(resp, q):
		return resp, nil
	}
	return nil, fmt.Errorf("%s %s: reply does not match the query", network, addr)
}

// upstreamQuery is what goes upstream for req: its question (with the
// client's case), RD/CD/AD and EDNS0 (DO and options, but our buffer size
// and no COOKIE: the client's cookie is meant for us, not for the
// upstream). Other additional records (TSIG…) are not relayed.
func upstreamQuery(req *mdns.Msg) *mdns.Msg {
	q := new(mdns.Msg)
	q.Opcode = mdns.OpcodeQuery
	q.RecursionDesired = req.RecursionDesired
	q.CheckingDisabled = req.CheckingDisabled
	q.AuthenticatedData = req.AuthenticatedData
	q.Question = []mdns.Question{req.Question[0]}
	if opt := req.IsEdns0(); opt != nil {
		o := &mdns.OPT{Hdr: mdns.RR_Header{Name: ".", Rrtype: mdns.TypeOPT}}
		o.SetUDPSize(maxUDPSize)
		o.SetDo(opt.Do())
		for _, e := range opt.Option {
			if e.Option() != mdns.EDNS0COOKIE {
				o.Option = append(o.Option, e)
			}
		}
		q.Extra = []mdns.RR{o}
	}
	return q
}

// sameQuestion checks that a reply answers q (names compare without case:
// some upstreams do not echo the case they were asked in).
func sameQuestion(resp, q *mdns.Msg) bool {
	if len(resp.Question) != 1 {
		return false
	}
	a, b := resp.Question[0], q.Question[0]
	return a.Qtype == b.Qtype && a.Qclass == b.Qclass && strings.EqualFold(a.Name, b.Name)
}

// normalize prepares an upstream reply to be shared by every client that
// waits for it and by the cache:
//   - records owned by names of our zones are dropped: private answers come
//     from the View only, never from an upstream (which could otherwise
//     plant a private name, say at the end of a CNAME chain);
//   - the upstream's OPT (and any signature) is dropped, since finish adds
//     the client's own OPT;
//   - the SOA of a negative answer gets the negative TTL (RFC 2308: min of
//     its TTL and its minimum), so that the TTL a client sees says how long
//     the answer stays valid.
func normalize(m *mdns.Msg) {
	m.Answer = keep(m.Answer, notOurs)
	m.Ns = keep(m.Ns, notOurs)
	m.Extra = keep(m.Extra, func(rr mdns.RR) bool {
		switch rr.Header().Rrtype {
		case mdns.TypeOPT, mdns.TypeTSIG, mdns.TypeSIG:
			return false
		}
		return notOurs(rr)
	})
	if isNegative(m) {
		for _, rr := range m.Ns {
			if s, ok := rr.(*mdns.SOA); ok {
				s.Hdr.Ttl = min(s.Hdr.Ttl, s.Minttl)
			}
		}
	}
}

func notOurs(rr mdns.RR) bool {
	name := rr.Header().Name
	return !inZone(name, Zone) && !inZone(name, reverseZone)
}

// keep filters rrs in place.
func keep(rrs []mdns.RR, ok func(mdns.RR) bool) []mdns.RR {
	out := rrs[:0]
	for _, rr := range rrs {
		if ok(rr) {
			out = append(out, rr)
		}
	}
	clear(rrs[len(out):])
	return out
}

func isNegative(m *mdns.Msg) bool {
	return m.Rcode == mdns.RcodeNameError || m.Rcode == mdns.RcodeSuccess && len(m.Answer) == 0
}
