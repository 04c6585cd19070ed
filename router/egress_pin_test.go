package router

import (
	"testing"
	"time"
)

// TestPinFlowSweepsAtMostOncePerInterval: with the flow table full, the
// sweep of idle flows (a walk of the whole table) runs at most once per
// flowSweepEvery, not on every new flow; when it runs it frees the idle
// flows and the new one is pinned.
func TestPinFlowSweepsAtMostOncePerInterval(t *testing.T) {
	a := &Attached{}
	t0 := int64(time.Hour)
	for i := range maxFlows {
		a.pinFlow(flowKey{sport: uint16(i), dport: uint16(i >> 16), proto: 6}, [4]byte{1}, t0)
	}
	if len(a.flows) != maxFlows {
		t.Fatalf("%d flows pinned, want %d", len(a.flows), maxFlows)
	}
	newKey := flowKey{proto: 17, sport: 1}
	// All live: the sweep runs and frees nothing.
	a.pinFlow(newKey, [4]byte{2}, t0+1)
	if _, ok := a.flows[newKey]; ok || a.flowSwept != t0+1 {
		t.Fatalf("full table of live flows: pinned %v, swept at %d", ok, a.flowSwept)
	}
	// Every flow idle now, but the last sweep was less than an interval
	// ago: no sweep, not pinned.
	idle := t0 + flowIdle + 1
	a.flowSwept = idle - flowSweepEvery/2
	a.pinFlow(newKey, [4]byte{2}, idle)
	if _, ok := a.flows[newKey]; ok || len(a.flows) != maxFlows {
		t.Fatalf("swept again within the interval: %d flows", len(a.flows))
	}
	// An interval later: swept, the idle flows go, the new one is pinned.
	a.pinFlow(newKey, [4]byte{2}, idle+flowSweepEvery)
	if p, ok := a.flows[newKey]; !ok || p.node != [4]byte{2} || len(a.flows) != 1 {
		t.Fatalf("after the sweep: pinned %v, %d flows", ok, len(a.flows))
	}
}
