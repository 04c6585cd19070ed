package dns

import (
	"strconv"
	"sync/atomic"

	mdns "github.com/miekg/dns"
	"github.com/vrouter/vrouter/internal/hist"
)

// Stats are cumulative counters.
type Stats struct {
	Rcodes         map[string]uint64 // by rcode name as mdns.RcodeToString ("NOERROR", "NXDOMAIN", "SERVFAIL", …), every response sent
	Local          uint64            // queries answered from the private zones
	Forwarded      uint64            // upstream exchanges started
	CacheHits      uint64
	UpstreamErrors uint64 // failed or timed-out upstream exchanges
	TCPRetries     uint64 // truncated UDP upstream replies retried over TCP
	Flood          uint64 // queries refused by the in-flight bounds
	FloodNetwork   uint64 // of those, refused because their network held more than its share of the flights
	Truncated      uint64 // responses truncated to the client's size
	// RateDropped and RateRefused are the queries of a network above its
	// fair share of the query rate while others asked too (fair.go):
	// dropped unanswered, or answered REFUSED (counted in Rcodes too).
	RateDropped, RateRefused uint64
	// Inflight is the upstream exchanges in progress now (flights), out
	// of MaxInflight allowed.
	Inflight, MaxInflight int
	// UpstreamLatency is the duration of every exchange with one upstream
	// (UDP, then TCP if truncated), failed ones included.
	UpstreamLatency hist.Snapshot
}

// upstreamBuckets spread from a cache on the same host to the timeout.
var upstreamBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2}

// maxRcode bounds the rcode table: rcodes are 12 bits with EDNS0.
const maxRcode = 0xFFF

// counters are updated lock-free on the query path. The rcode table is
// indexed directly (32 KiB) so that counting needs no map and no lock.
type counters struct {
	local, forwarded, cacheHits, upstreamErrors atomic.Uint64
	tcpRetries, flood, truncated                atomic.Uint64
	floodNetwork                                atomic.Uint64
	rateDropped, rateRefused                    atomic.Uint64
	rcodes                                      [maxRcode + 1]atomic.Uint64
	upstream                                    *hist.Histogram
}

func (c *counters) rcode(rc int) {
	if rc >= 0 && rc <= maxRcode {
		c.rcodes[rc].Add(1)
	}
}

// Stats returns a snapshot of the counters.
func (r *Resolver) Stats() Stats {
	c := &r.stats
	s := Stats{
		Rcodes:          make(map[string]uint64),
		Local:           c.local.Load(),
		Forwarded:       c.forwarded.Load(),
		CacheHits:       c.cacheHits.Load(),
		UpstreamErrors:  c.upstreamErrors.Load(),
		TCPRetries:      c.tcpRetries.Load(),
		Flood:           c.flood.Load(),
		FloodNetwork:    c.floodNetwork.Load(),
		Truncated:       c.truncated.Load(),
		RateDropped:     c.rateDropped.Load(),
		RateRefused:     c.rateRefused.Load(),
		MaxInflight:     r.maxTotal,
		UpstreamLatency: c.upstream.Snapshot(),
	}
	r.mu.Lock()
	s.Inflight = r.exchanges
	r.mu.Unlock()
	for rc := range c.rcodes {
		if n := c.rcodes[rc].Load(); n != 0 {
			s.Rcodes[rcodeName(rc)] += n
		}
	}
	return s
}

func rcodeName(rc int) string {
	if rc == mdns.RcodeBadVers {
		// miekg names 16 BADSIG (its TSIG meaning); in a response to a
		// query, which is never signed here, 16 is always BADVERS.
		return "BADVERS"
	}
	if name, ok := mdns.RcodeToString[rc]; ok {
		return name
	}
	return "RCODE" + strconv.Itoa(rc)
}
