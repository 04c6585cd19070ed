package dns

import (
	"slices"
	"sync"
	"time"
)

// Query rate fairness between networks. The in-flight bounds (forward.go)
// share the upstream slots, but a network that floods with names the
// resolver cannot answer at once still costs the node CPU for every query:
// parsing, the refusal or the exchange, the answer, and its load
// generator's retries. Last session one network's flood of forwarded
// names cut a neighbour's TCP throughput to 0.12× and raised its DNS p99
// ×5–8 (bench scenario 9).
//
// So the resolver shares a node-wide query rate among the networks, per
// epoch of rateEpoch:
//   - a network alone (no other network asked anything in this epoch or the
//     last) is never limited: scenario 5's single container keeps its rate;
//   - while the node's queries in this epoch stay below the budget, nobody
//     is limited;
//   - beyond it, a network is refused past its max-min fair share of the
//     budget, computed from what each network asked in the last epoch
//     (water-filling): a light network (below the level) is always served
//     (sparse first), the heavy ones share what it leaves.
//
// What the gate shares is the node's work, not the count of queries: a
// query is one unit when it is admitted, and an upstream exchange it starts
// costs exchangeCost more (in bench scenario 5 a new forwarded name costs
// the node about five times the CPU of a private one: 5.2k against 27k q/s
// with both cores busy). Exchanges are charged, never refused, by the gate:
// the in-flight bounds do that.
//
// Refused queries are dropped before anything is unpacked, except every
// slipEvery-th, which gets REFUSED. The idea is BIND's response rate
// limiting ("slip", 2 by default): a dropped query costs nothing but its
// read, and a flooding client waits for its own timeout, which is what
// takes its load off the node; the slipped answers give a real client a
// real error instead of timeouts only.
const (
	// DefaultQueryRate is the node's units per second (private answers
	// per second; a fifth as many new forwarded names) shared among the
	// networks when more than one asks at once.
	DefaultQueryRate = 10000
	exchangeCost     = 4
	rateEpoch        = 100 * time.Millisecond
	slipEvery        = 2
)

// Admission is what the gate says of one query.
type Admission uint8

const (
	Admit  Admission = iota // serve it
	Drop                    // say nothing
	Refuse                  // answer REFUSED, without serving it
)

// netRate is one network's use of the gate.
type netRate struct {
	last int64 // epoch of its last query
	cur  int   // queries it asked in epoch last, refused ones included
	slip uint32
}

// rateGate is shared by every network's handler.
type rateGate struct {
	budget int // queries per epoch before anybody is limited; 0: no gate

	mu     sync.Mutex
	epoch  int64
	total  int // queries admitted in this epoch, every network
	active int // networks that asked in this epoch or the last
	level  int // a network's fair share of this epoch
	nets   map[string]*netRate
	asked  []int // scratch of roll
}

func newRateGate(perSecond int) *rateGate {
	return &rateGate{
		budget: int(int64(perSecond) * int64(rateEpoch) / int64(time.Second)),
		nets:   make(map[string]*netRate),
	}
}

// network returns the state of pn, made on first use.
func (g *rateGate) network(pn string) *netRate {
	g.mu.Lock()
	defer g.mu.Unlock()
	n, ok := g.nets[pn]
	if !ok {
		n = &netRate{last: -2}
		g.nets[pn] = n
	}
	return n
}

// admit decides on one query of network n at now.
func (g *rateGate) admit(n *netRate, now time.Time) Admission {
	if g.budget <= 0 {
		return Admit
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.touch(n, now)
	n.cur++
	if g.active <= 1 || g.total < g.budget || n.cur <= g.level {
		g.total++
		return Admit
	}
	n.slip++
	if n.slip%slipEvery == 0 {
		return Refuse
	}
	return Drop
}

// charge counts units of work done for network n (an upstream exchange)
// into the current epoch.
func (g *rateGate) charge(n *netRate, units int, now time.Time) {
	if g.budget <= 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.touch(n, now)
	n.cur += units
	g.total += units
}

// touch moves the gate and n to the epoch of now. g.mu is held.
func (g *rateGate) touch(n *netRate, now time.Time) {
	e := now.UnixNano() / int64(rateEpoch)
	if e != g.epoch {
		g.roll(e)
	}
	if n.last != e {
		if n.last != e-1 {
			g.active++ // not counted by roll
		}
		n.last, n.cur = e, 0
	}
}

// roll starts epoch e: the networks that asked in the epoch before are the
// active ones, and what they asked sets the fair level. A clock that went
// back starts a new epoch too.
func (g *rateGate) roll(e int64) {
	g.asked = g.asked[:0]
	for _, n := range g.nets {
		if n.last == e-1 {
			g.asked = append(g.asked, n.cur)
		}
	}
	g.epoch, g.total, g.active = e, 0, len(g.asked)
	g.level = fairLevel(g.asked, g.budget)
}

// fairLevel is the max-min fair share of budget among demands (sorted in
// place): the level such that every demand below it is met in full and
// those above it get it. With every demand met it is budget itself.
func fairLevel(demands []int, budget int) int {
	slices.Sort(demands)
	left := budget
	for i, d := range demands {
		share := left / (len(demands) - i)
		if d > share {
			return share
		}
		left -= d
	}
	return budget
}
