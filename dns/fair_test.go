package dns

import (
	"testing"
	"time"
)

// epochStart is the start of an epoch, so that a test's queries fall in
// the epochs it means.
var epochStart = time.Unix(1_700_000_000, 0)

func TestFairLevel(t *testing.T) {
	for _, c := range []struct {
		demands []int
		budget  int
		want    int
	}{
		{nil, 100, 100},
		{[]int{500}, 100, 100},
		{[]int{10, 500}, 100, 90},
		{[]int{500, 10}, 100, 90},
		{[]int{500, 400}, 100, 50},
		{[]int{10, 20, 500}, 100, 70},
		{[]int{30, 40, 50}, 100, 35},
		{[]int{10, 20}, 100, 100},
	} {
		if got := fairLevel(append([]int(nil), c.demands...), c.budget); got != c.want {
			t.Errorf("fairLevel(%v, %d) = %d, want %d", c.demands, c.budget, got, c.want)
		}
	}
}

// count asks n queries of net at now and tallies the verdicts.
func count(g *rateGate, net *netRate, now time.Time, n int) (admitted, dropped, refused int) {
	for range n {
		switch g.admit(net, now) {
		case Admit:
			admitted++
		case Drop:
			dropped++
		case Refuse:
			refused++
		}
	}
	return
}

func TestRateGateLoneNetworkUnlimited(t *testing.T) {
	g := newRateGate(1000) // 100 per epoch
	a := g.network("a")
	for e := range 5 {
		now := epochStart.Add(time.Duration(e) * rateEpoch)
		if adm, _, _ := count(g, a, now, 10000); adm != 10000 {
			t.Fatalf("epoch %d: a network alone got %d of 10000 admitted", e, adm)
		}
	}
}

func TestRateGateHeavyNetworkPaysLightServed(t *testing.T) {
	g := newRateGate(1000) // 100 per epoch
	a, b := g.network("a"), g.network("b")
	now := epochStart
	// Epoch 0: A floods alone, then B starts.
	if adm, _, _ := count(g, a, now, 1000); adm != 1000 {
		t.Fatalf("A alone: %d of 1000 admitted", adm)
	}
	if adm, _, _ := count(g, b, now, 10); adm != 10 {
		t.Fatalf("B's first queries: %d of 10 admitted", adm)
	}
	if adm, _, _ := count(g, a, now, 100); adm != 0 {
		t.Fatalf("A over the budget with B active: %d of 100 admitted", adm)
	}
	// Epoch 1: the level from epoch 0 (A 1100, B 10) is 90: B is served
	// in full, A gets the rest of the budget and no more.
	now = now.Add(rateEpoch)
	if adm, _, _ := count(g, b, now, 10); adm != 10 {
		t.Fatalf("B: %d of 10 admitted", adm)
	}
	adm, dropped, refused := count(g, a, now, 1000)
	if adm != 90 || dropped+refused != 910 {
		t.Fatalf("A: %d admitted, %d dropped, %d refused; want 90 admitted", adm, dropped, refused)
	}
	if refused != 910/slipEvery || dropped != 910-910/slipEvery {
		t.Fatalf("A's refusals: %d dropped, %d refused; want every %dth refused", dropped, refused, slipEvery)
	}
	// B asking after A's excess is still served: it is below the level.
	if adm, _, _ := count(g, b, now, 10); adm != 10 {
		t.Fatalf("B after A's flood: %d of 10 admitted", adm)
	}
	// Epochs 3 and 4: B went quiet for two epochs, A is alone again.
	now = now.Add(3 * rateEpoch)
	count(g, a, now, 10)
	now = now.Add(rateEpoch)
	if adm, _, _ := count(g, a, now, 5000); adm != 5000 {
		t.Fatalf("A alone again: %d of 5000 admitted", adm)
	}
}

func TestRateGateBothHeavyShare(t *testing.T) {
	g := newRateGate(1000)
	a, b := g.network("a"), g.network("b")
	now := epochStart
	count(g, a, now, 500)
	count(g, b, now, 500)
	now = now.Add(rateEpoch)
	// Interleaved, as two floods arrive.
	var admA, admB int
	for range 500 {
		x, _, _ := count(g, a, now, 1)
		y, _, _ := count(g, b, now, 1)
		admA, admB = admA+x, admB+y
	}
	if admA != 50 || admB != 50 {
		t.Fatalf("two floods admitted %d and %d of a budget of 100, want 50 each", admA, admB)
	}
}

func TestRateGateDisabled(t *testing.T) {
	g := newRateGate(0)
	a, b := g.network("a"), g.network("b")
	count(g, a, epochStart, 1000)
	if adm, _, _ := count(g, b, epochStart, 1000); adm != 1000 {
		t.Fatalf("a gate of rate 0 admitted %d of 1000", adm)
	}
}

// TestAdmitQueryCounts: the handlers of two networks share the resolver's
// gate, and every refusal is counted by kind and REFUSED in the rcodes.
func TestAdmitQueryCounts(t *testing.T) {
	now := epochStart
	r := newResolver(t, Config{QueryRate: 1000, Now: func() time.Time { return now }})
	ha := r.Handler(pnA).(*netHandler)
	hb := r.Handler(pnB).(*netHandler)
	// A second handler of a network shares that network's state.
	if ha2 := r.Handler(pnA).(*netHandler); ha2.rate != ha.rate {
		t.Fatal("two handlers of one network have separate rates")
	}
	for range 200 {
		ha.AdmitQuery()
	}
	hb.AdmitQuery()
	var verdicts [3]int
	for range 100 {
		verdicts[ha.AdmitQuery()]++
	}
	st := r.Stats()
	if verdicts[Admit] != 0 || st.RateDropped != uint64(verdicts[Drop]) || st.RateRefused != uint64(verdicts[Refuse]) ||
		st.RateDropped+st.RateRefused != 100 || st.Rcodes["REFUSED"] != st.RateRefused {
		t.Fatalf("verdicts %v, stats dropped %d refused %d rcodes %v", verdicts, st.RateDropped, st.RateRefused, st.Rcodes)
	}
	// Without a gate (negative rate) nothing is refused.
	r2 := newResolver(t, Config{QueryRate: -1, Now: func() time.Time { return now }})
	h2a, h2b := r2.Handler(pnA).(*netHandler), r2.Handler(pnB).(*netHandler)
	for range 30000 {
		if h2a.AdmitQuery() != Admit || h2b.AdmitQuery() != Admit {
			t.Fatal("QueryRate -1 refused a query")
		}
	}
}

// TestRateGateChargesExchanges: the upstream exchanges a network starts
// count towards its demand and the node's budget, so a network of new
// forwarded names is limited at a fifth of the queries of private ones.
func TestRateGateChargesExchanges(t *testing.T) {
	g := newRateGate(1000) // 100 units per epoch
	a, b := g.network("a"), g.network("b")
	now := epochStart
	count(g, b, now, 1)
	for range 20 {
		count(g, a, now, 1)
		g.charge(a, exchangeCost, now)
	}
	// 1 + 20×5 units: over the budget, and a is over its share.
	if adm, _, _ := count(g, a, now, 1); adm != 0 {
		t.Fatal("a network over the budget by its exchanges was admitted")
	}
	now = now.Add(rateEpoch)
	// Level from (a 101, b 1): 99 units; a is admitted 99 queries when
	// they need no exchange, 20 when each starts one.
	var adm int
	for range 100 {
		if g.admit(a, now) == Admit {
			adm++
			g.charge(a, exchangeCost, now)
		}
	}
	if adm != 20 {
		t.Fatalf("a admitted %d queries with exchanges, want 20 (99 units)", adm)
	}
}

// TestForwardCharges: a forwarded query's exchange is charged to its
// network through the handler.
func TestForwardCharges(t *testing.T) {
	up := startUpstream(t, answerA("127.0.0.8", 60))
	now := epochStart
	r := newResolver(t, Config{Upstreams: []string{up.addr}, CacheSize: -1, Now: func() time.Time { return now }})
	h := r.Handler(pnA).(*netHandler)
	w := udpWriter("10.240.0.5")
	ask(t, h, w, wireQuery(t, "x.bench.test.", 1))
	r.gate.mu.Lock()
	cur := h.rate.cur
	r.gate.mu.Unlock()
	if cur != exchangeCost {
		t.Fatalf("a forwarded query charged %d units, want %d", cur, exchangeCost)
	}
}
