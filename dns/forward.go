package dns

import (
	"context"
	"errors"
	"net"
	"net/netip"

	mdns "github.com/miekg/dns"
)

// A forwarded query goes: cache → join a flight (in-flight bounds) → the
// flight's leader exchanges with the upstreams while the others wait →
// relay a copy of the shared reply. The shared reply is read-only once the
// flight is done (it is also the cached copy).

var (
	errFlood  = errors.New("in-flight bound reached")
	errClosed = errors.New("resolver closed")
)

// clientKey identifies a client for the per-client bound: addresses of
// different networks overlap, so the network is part of it.
type clientKey struct {
	pn string
	ip netip.Addr
}

// flight is one forward in progress; identical queries wait for it.
type flight struct {
	pn   string        // the network whose query started it (its share)
	done chan struct{} // closed by the leader once msg and err are set
	msg  *mdns.Msg
	err  error
}

// forward answers a query for a name outside our zones through send. A
// query that joined a flight sends its answer before it leaves, so that
// Close returns only once every in-flight query has been answered.
func (r *Resolver) forward(pn string, rate *netRate, w mdns.ResponseWriter, req *mdns.Msg, send func(*mdns.Msg)) {
	if m, ok := r.forwardNow(req); ok {
		send(m)
		return
	}
	key := keyOf(req)
	client := clientKey{pn: pn, ip: remoteIP(w)}
	f, leader, err := r.join(key, client)
	if err != nil {
		if errors.Is(err, errFlood) {
			r.stats.flood.Add(1)
			r.log.Debug("dns: query refused", "network", pn, "client", client.ip, "err", err)
		}
		send(servfail(req))
		return
	}
	defer r.leave(client)

	ctx, cancel := context.WithTimeout(r.ctx, r.timeout)
	defer cancel()
	if leader {
		r.gate.charge(rate, exchangeCost, r.now())
		f.msg, f.err = r.exchangeAll(ctx, req)
		if f.err == nil && r.cache != nil {
			// Stored before the flight lands, so that no identical query
			// falls between the two and starts a second exchange.
			if ttl, ok := cacheTTL(f.msg); ok {
				r.cache.put(key, f.msg, ttl, r.now())
			}
		}
		r.land(key, f)
		close(f.done)
	} else {
		select {
		case <-f.done:
		case <-ctx.Done():
			send(servfail(req))
			return
		}
	}
	if f.err != nil {
		send(servfail(req))
		return
	}
	send(relay(f.msg.Copy(), req))
}

// forwardNow is the part of forward that never blocks: the answer to req
// from the cache, or SERVFAIL without upstreams. ok is false when req
// needs an upstream exchange.
func (r *Resolver) forwardNow(req *mdns.Msg) (m *mdns.Msg, ok bool) {
	if r.cache != nil {
		if m := r.cache.get(keyOf(req), r.now()); m != nil {
			r.stats.cacheHits.Add(1)
			return relay(m, req), true
		}
	}
	if len(r.upstreams) == 0 {
		return servfail(req), true
	}
	return nil, false
}

// join registers a forwarded query of client: it becomes the leader of a
// new flight for key or waits for the flight in progress. It refuses the
// query when the client, its network or everybody has too much in flight.
//
// The flights are shared fairly by the networks: within its share (the
// bound divided among the networks with flights, itself included, at most
// three quarters of it) a network always starts a flight; above it only
// while fewer than three quarters of the bound are in flight. So queries
// of one network that an upstream blackholes cannot take every flight, and
// the others keep a quarter at least (AUDIT D7).
func (r *Resolver) join(key cacheKey, client clientKey) (f *flight, leader bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		return nil, false, errClosed
	}
	if r.clients[client] >= r.maxClient {
		return nil, false, errFlood
	}
	f, ok := r.flights[key]
	if !ok {
		if r.exchanges >= r.maxTotal {
			return nil, false, errFlood
		}
		if !r.netShareLocked(client.pn) {
			r.stats.floodNetwork.Add(1)
			return nil, false, errFlood
		}
		f = &flight{pn: client.pn, done: make(chan struct{})}
		r.flights[key] = f
		r.exchanges++
		r.netFlights[client.pn]++
		leader = true
	}
	r.clients[client]++
	r.wg.Add(1)
	return f, leader, nil
}

// netShareLocked reports whether network pn may start one more flight.
// Callers hold r.mu.
func (r *Resolver) netShareLocked(pn string) bool {
	nets := len(r.netFlights)
	mine, ok := r.netFlights[pn]
	if !ok {
		nets++
	}
	line := r.maxTotal - r.maxTotal/4
	share := min(r.maxTotal/nets, line)
	return mine < share || (r.exchanges < line && mine < line)
}

// leave undoes join's per-client count; the map keeps no idle client.
func (r *Resolver) leave(client clientKey) {
	r.mu.Lock()
	if r.clients[client] <= 1 {
		delete(r.clients, client)
	} else {
		r.clients[client]--
	}
	r.mu.Unlock()
	r.wg.Done()
}

// land ends the flight f of key.
func (r *Resolver) land(key cacheKey, f *flight) {
	r.mu.Lock()
	delete(r.flights, key)
	r.exchanges--
	if r.netFlights[f.pn] <= 1 {
		delete(r.netFlights, f.pn)
	} else {
		r.netFlights[f.pn]--
	}
	r.mu.Unlock()
}

// relay turns a copy of an upstream (or cached) reply into the answer to
// req: the client's id, flags and question (its case), not authoritative.
// The client's OPT is added back by finish.
func relay(m, req *mdns.Msg) *mdns.Msg {
	m.Id = req.Id
	m.Response = true
	m.Opcode = mdns.OpcodeQuery
	m.Authoritative = false
	m.Truncated = false
	m.RecursionDesired = req.RecursionDesired
	m.CheckingDisabled = req.CheckingDisabled
	m.Question = req.Question[:1:1]
	return m
}

func servfail(req *mdns.Msg) *mdns.Msg {
	return new(mdns.Msg).SetRcode(req, mdns.RcodeServerFailure)
}

// remoteIP is the client's address; the zero Addr when the writer has none
// (direct calls), which makes all such callers one client.
func remoteIP(w mdns.ResponseWriter) netip.Addr {
	var ip net.IP
	switch a := w.RemoteAddr().(type) {
	case *net.UDPAddr:
		if a != nil {
			ip = a.IP
		}
	case *net.TCPAddr:
		if a != nil {
			ip = a.IP
		}
	}
	addr, _ := netip.AddrFromSlice(ip)
	return addr.Unmap()
}
