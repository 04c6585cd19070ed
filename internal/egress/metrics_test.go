package egress

import (
	"testing"

	"github.com/vrouter/vrouter/internal/leaktest"
)

// activeOfApp returns the gateway marked active in n's metrics for app,
// and the app's failover count there.
func activeOfApp(n *testNode, app string) (string, uint64, int) {
	n.svc.Path.Reconcile()
	for _, m := range n.svc.Path.Metrics() {
		if m.App != app {
			continue
		}
		active := ""
		for _, tg := range m.Targets {
			if tg.Active {
				active = tg.Gateway
			}
		}
		return active, m.Failovers, len(m.Targets)
	}
	return "", 0, 0
}

// TestFailoverMetrics: draining the gateway a worker's container uses
// moves the worker's active gateway to the other one and counts one
// failover; undraining it makes the primary active again, which is no
// failover (the other gateway still worked).
func TestFailoverMetrics(t *testing.T) {
	leaktest.Check(t)
	g1, g2, w := startTrio(t)
	w.enable(t, egressAppA)
	w.attach(t, "c-000000000001", egressAppA, testPN, "10.240.0.1")
	var first string
	defer func() {
		if t.Failed() {
			w.svc.Path.mu.Lock()
			t.Logf("routes %+v", w.svc.Path.routes)
			w.svc.Path.mu.Unlock()
			t.Logf("metrics %+v targets %+v", w.svc.Path.Metrics(), w.svc.Assigner.Targets(egressAppA))
		}
	}()
	waitFor(t, "an active gateway on the worker", func() bool {
		a, fo, n := activeOfApp(w, egressAppA)
		first = a
		return a != "" && fo == 0 && n == 2
	})
	gws := map[string]*testNode{"g1": g1, "g2": g2}
	if _, err := gws[first].svc.Assigner.SetDraining(true); err != nil {
		t.Fatal(err)
	}
	var second string
	waitFor(t, "the worker's active gateway to move", func() bool {
		a, fo, _ := activeOfApp(w, egressAppA)
		second = a
		return a != "" && a != first && fo == 1
	})
	for _, m := range w.svc.Path.Metrics() {
		for _, tg := range m.Targets {
			if tg.Gateway == first && (!tg.Draining || tg.Healthy) {
				t.Errorf("drained gateway %s: %+v, want draining and not healthy", first, tg)
			}
		}
		if m.LastFailover.IsZero() {
			t.Error("no time of the failover")
		}
	}
	if _, err := gws[first].svc.Assigner.SetDraining(false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the undrained gateway healthy again", func() bool {
		for _, m := range w.svc.Path.Metrics() {
			for _, tg := range m.Targets {
				if tg.Gateway == first {
					return tg.Healthy && !tg.Draining
				}
			}
		}
		return false
	})
	if a, fo, _ := activeOfApp(w, egressAppA); fo != 1 || a == "" {
		t.Errorf("after undrain: active %q (was %s, then %s), %d failovers; want 1", a, first, second, fo)
	}
}
