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
// The state is two atomics written once per batch when the network
// changes; no lock, no allocation.
const (
	// fairWindow: another network forwarded within this long, so the
	// node is contended.
	fairWindow = 2 * time.Millisecond
	// fairMaxPause bounds one pause (a batch that took long because the
	// goroutine was preempted says little about its cost).
	fairMaxPause = time.Millisecond
)

type fairShare struct {
	lastNet   atomic.Uint32 // network of the last batch any port forwarded (0: none yet)
	contended atomic.Int64  // router clock until which the node counts as contended
}

// pause records that a port of network forwarded a batch that took took
// nanoseconds and ended at now (router clock), and returns how long the
// port should pause before its next read: 0 unless it is backlogged and
// a port of another network forwarded within fairWindow.
func (f *fairShare) pause(network uint32, now, took int64, backlogged bool) time.Duration {
	if last := f.lastNet.Load(); last != network {
		f.lastNet.Store(network)
		if last != 0 {
			f.contended.Store(now + int64(fairWindow))
		}
	}
	if !backlogged || now >= f.contended.Load() {
		return 0
	}
	return time.Duration(min(max(took, 0), int64(fairMaxPause)))
}

// fairAfter is the read loop's step after a batch read at start (router
// clock): it pauses a backlogged port over its share (fair_pauses).
func (a *Attached) fairAfter(start int64, backlogged bool) {
	now := a.r.now()
	if d := a.r.fair.pause(a.cfg.Network, now, now-start, backlogged); d > 0 {
		a.ctr[ctrFairPauses].Add(1)
		time.Sleep(d)
	}
}
