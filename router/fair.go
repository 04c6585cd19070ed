package router

import (
	"sync/atomic"
	"time"
)

// Fair share of the node's CPU between networks. Every port's read loop,
// the netstacks and wireguard-go run on the same few cores, and a
// container that floods keeps its read goroutine runnable all the time:
// with every P of the runtime busy, Go notices that another container's
// TUN became readable only when sysmon polls the network (every 10 ms),
// so a neighbour's single request waits milliseconds behind the flood.
//
// So a port that is backlogged (its Read filled the whole batch: more is
// waiting in its TUN queue) while a port of another network forwarded
// recently pauses after the batch, for as long as the batch took: its
// read loop gets at most half a core while others want some. Its excess
// then waits, and is dropped when the queue is full, in the kernel's TUN
// queue at the flooding container's own cost, not in the router after
// being read and routed. The pause parks the goroutine, so the runtime's
// Ps fall idle and poll the network at once: the quiet port, whose packet
// just arrived, is served first (fq_codel's sparse flows). A port that is
// not backlogged never pauses, and neither does one whose network is the
// only one forwarding: a lone tenant (or a network's own ports, like a
// client and a server of one network) may use the whole node.
//
// Packets to the resolver are paced as well, backlogged or not: each
// costs the node far more than its read (the DNS server, an upstream
// exchange over a host socket, the answer's way back: about 65 µs of the
// worker's CPU per forwarded name in scenario 9, against ~1 µs to read
// and route it), so a container that keeps many queries in flight takes
// the node's CPU from its neighbours' forwarding without ever filling a
// batch. While the node is contended a port may send fairResolverRate
// packets per second to its resolver (a burst of fairResolverBurst);
// beyond that its read loop sleeps until the packets are paid for
// (fair_resolver_pauses), so its queries wait in its own TUN queue and
// its clients slow down instead of losing answers.
//
// The state is two atomics written once per batch when the network
// changes; no lock, no allocation.
const (
	// fairWindow: another network forwarded within this long, so the
	// node is contended.
	fairWindow = 2 * time.Millisecond
	// fairMaxPause bounds one pause (a batch that took long because the
	// goroutine was preempted says little about its cost).
	fairMaxPause = time.Millisecond

	// fairResolverRate is far above what a container's own lookups need
	// and about a third of what one core of the worker forwards.
	fairResolverRate  = 5000
	fairResolverBurst = 512
	// fairMaxResolverPause bounds one resolver pause: a port is never
	// parked longer than this after one batch (the debt left is paid
	// after the next ones).
	fairMaxResolverPause = 4 * time.Millisecond
)

type fairShare struct {
	lastNet   atomic.Uint32 // network of the last batch any port forwarded (0: none yet)
	contended atomic.Int64  // router clock until which the node counts as contended
}

// pause records that a port of network forwarded a batch that took took
// nanoseconds and ended at now (router clock). It reports whether a port
// of another network forwarded within fairWindow, and how long the port
// should pause before its next read: 0 unless it is also backlogged.
func (f *fairShare) pause(network uint32, now, took int64, backlogged bool) (time.Duration, bool) {
	if last := f.lastNet.Load(); last != network {
		f.lastNet.Store(network)
		if last != 0 {
			f.contended.Store(now + int64(fairWindow))
		}
	}
	if now >= f.contended.Load() {
		return 0, false
	}
	if !backlogged {
		return 0, true
	}
	return time.Duration(min(max(took, 0), int64(fairMaxPause))), true
}

// pacer is a token bucket that goes into debt: charge takes n tokens and
// returns how long the owner must wait until the debt is paid. Owned by
// one read goroutine; times are router clock nanoseconds.
type pacer struct {
	interval int64 // nanoseconds per token
	burst    int64
	tokens   int64 // negative: debt
	last     int64
}

func newPacer(rate, burst int, now int64) pacer {
	return pacer{interval: int64(time.Second) / int64(rate), burst: int64(burst), tokens: int64(burst), last: now}
}

// charge takes n tokens at now and returns the wait, at most maxWait: a
// batch that runs deeper into debt pays the rest with the next ones.
// The debt is bounded by the burst, so that a port is not paced for long
// after the node is no longer contended (charge is only called while it
// is).
func (p *pacer) charge(now int64, n int, maxWait time.Duration) time.Duration {
	if earned := (now - p.last) / p.interval; earned > 0 {
		p.tokens = min(p.burst, p.tokens+earned)
		p.last += earned * p.interval
	}
	if p.tokens == p.burst {
		p.last = now
	}
	p.tokens = max(p.tokens-int64(n), -p.burst)
	if p.tokens >= 0 {
		return 0
	}
	return time.Duration(min(-p.tokens*p.interval, int64(maxWait)))
}

// fairAfter is the read loop's step after a batch read at start (router
// clock): it pauses a backlogged port over its share (fair_pauses) and
// one over its resolver rate (fair_resolver_pauses), only while the node
// is contended.
func (a *Attached) fairAfter(start int64, backlogged bool) {
	now := a.r.now()
	d, contended := a.r.fair.pause(a.cfg.Network, now, now-start, backlogged)
	if d > 0 {
		a.ctr[ctrFairPauses].Add(1)
	}
	if n := a.fairResolver; n > 0 {
		a.fairResolver = 0
		if contended {
			if p := a.resolverPace.charge(now, n, fairMaxResolverPause); p > 0 {
				a.ctr[ctrFairResolverPauses].Add(1)
				d += p
			}
		}
	}
	if d > 0 {
		time.Sleep(d)
	}
}
