package stack

import (
	"net/netip"
	"reflect"
	"testing"
)

func TestBudgetFairness(t *testing.T) {
	a1 := netip.MustParseAddr("10.240.0.2")
	a2 := netip.MustParseAddr("10.240.0.3")
	b1 := netip.MustParseAddr("10.240.0.2") // same address, another network
	b2 := netip.MustParseAddr("10.240.0.4")
	type step struct {
		net    string
		client netip.Addr
		n      int    // acquisitions
		want   string // reason of the last one ("" admitted)
	}
	tests := []struct {
		name  string
		lim   BudgetLimits
		steps []step
	}{
		{
			name: "a lone container stops at half the node",
			lim:  BudgetLimits{FDs: 100, Memory: 1 << 30},
			steps: []step{
				{"n1", a1, 50, ""},
				{"n1", a1, 1, RefusedContainerMax},
			},
		},
		{
			name: "a lone network stops at the borrow line, a second network still gets its share",
			lim:  BudgetLimits{FDs: 100, Memory: 1 << 30},
			steps: []step{
				{"n1", a1, 50, ""},
				{"n1", a2, 25, ""},
				{"n1", a2, 1, RefusedNetworkShare},
				{"n2", b1, 25, ""}, // the kept quarter
				{"n2", b1, 1, RefusedNodeFDs},
			},
		},
		{
			name: "over the borrow line a container above its share is refused",
			lim:  BudgetLimits{FDs: 100, Memory: 1 << 30},
			steps: []step{
				{"n1", a1, 50, ""},
				{"n1", a2, 10, ""},
				{"n2", b1, 15, ""}, // node at 75: the borrow line
				{"n1", a2, 1, RefusedNetworkShare},
				{"n2", b1, 10, ""}, // n2 below its share of 50
				{"n2", b2, 1, ""},
				{"n2", b1, 1, RefusedContainerShare}, // b1 holds its share (25) of n2's
			},
		},
		{
			name: "memory is a budget of its own",
			lim:  BudgetLimits{FDs: 1000, Memory: 100 * tcpFlowCharge},
			steps: []step{
				{"n1", a1, 50, ""},
				{"n1", a1, 1, RefusedContainerMax},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBudget(tt.lim)
			type held struct {
				net    string
				client netip.Addr
			}
			var all []held
			for i, s := range tt.steps {
				for j := 0; j < s.n; j++ {
					got := b.acquire(s.net, s.client, tcpFlowCharge)
					last := j == s.n-1
					if !last && got != "" {
						t.Fatalf("step %d: acquisition %d refused early: %s", i, j, got)
					}
					if last && got != s.want {
						t.Fatalf("step %d: got %q, want %q (stats %+v)", i, got, s.want, b.Stats())
					}
					if got == "" {
						all = append(all, held{s.net, s.client})
					}
				}
			}
			st := b.Stats()
			refused := uint64(0)
			for _, n := range st.Refused {
				refused += n
			}
			wantRefused := uint64(0)
			for _, s := range tt.steps {
				if s.want != "" {
					wantRefused++
				}
			}
			if refused != wantRefused {
				t.Fatalf("refusals counted %v, want %d in all", st.Refused, wantRefused)
			}
			for _, h := range all {
				b.release(h.net, h.client, tcpFlowCharge)
			}
			if st := b.Stats(); st.FDsUsed != 0 || st.MemoryUsed != 0 || st.Networks != 0 || len(b.nets) != 0 {
				t.Fatalf("after releasing everything: %+v", st)
			}
		})
	}
}

func TestBudgetShares(t *testing.T) {
	a1 := netip.MustParseAddr("10.240.0.2")
	a2 := netip.MustParseAddr("10.240.0.3")
	b := NewBudget(BudgetLimits{FDs: 100, Memory: 1 << 30})
	for _, c := range []netip.Addr{a1, a1, a2} {
		if r := b.acquire("n1", c, 10); r != "" {
			t.Fatal(r)
		}
	}
	if r := b.acquire("n2", a1, 7); r != "" {
		t.Fatal(r)
	}
	got := b.Shares()
	want := map[string]NetworkShare{
		"n1": {BudgetShare{3, 30}, map[netip.Addr]BudgetShare{a1: {2, 20}, a2: {1, 10}}},
		"n2": {BudgetShare{1, 7}, map[netip.Addr]BudgetShare{a1: {1, 7}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Shares() = %+v, want %+v", got, want)
	}
	// A copy: what the caller holds does not move with the budget.
	b.release("n2", a1, 7)
	b.release("n1", a2, 10)
	if got["n2"].FDs != 1 || len(got["n1"].Clients) != 2 {
		t.Fatalf("Shares() result changed after release: %+v", got)
	}
	want = map[string]NetworkShare{"n1": {BudgetShare{2, 20}, map[netip.Addr]BudgetShare{a1: {2, 20}}}}
	if got := b.Shares(); !reflect.DeepEqual(got, want) {
		t.Fatalf("after releases Shares() = %+v, want %+v", got, want)
	}
}
