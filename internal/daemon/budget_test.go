package daemon

import (
	"testing"

	"github.com/vrouter/vrouter/stack"
)

func TestEgressBudgetFor(t *testing.T) {
	tests := []struct {
		name           string
		nofile, memory uint64
		want           stack.BudgetLimits
	}{
		{"typical", 20000, 24 << 30, stack.BudgetLimits{FDs: 20000 - maxFDReserve, Memory: 3 << 30}},
		{"systemd default", 524288, 64 << 30, stack.BudgetLimits{FDs: 524288 - maxFDReserve, Memory: 8 << 30}},
		{"a quarter in reserve", 8192, 1 << 30, stack.BudgetLimits{FDs: 8192 - 2048, Memory: minEgressMemory}},
		{"small limit keeps the minimum reserve", 1024, 1 << 30, stack.BudgetLimits{FDs: 1024 - minFDReserve, Memory: minEgressMemory}},
		{"tiny limit", 256, 1 << 30, stack.BudgetLimits{FDs: minEgressFDs, Memory: minEgressMemory}},
		{"unlimited", ^uint64(0), ^uint64(0), stack.BudgetLimits{FDs: 1 << 30, Memory: 1 << 50}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := egressBudgetFor(tt.nofile, tt.memory); got != tt.want {
				t.Fatalf("egressBudgetFor(%d, %d) = %+v, want %+v", tt.nofile, tt.memory, got, tt.want)
			}
		})
	}
}

func TestDefaultEgressBudget(t *testing.T) {
	lim, err := DefaultEgressBudget()
	if err != nil {
		t.Fatal(err)
	}
	if lim.FDs < minEgressFDs || lim.Memory < minEgressMemory {
		t.Fatalf("DefaultEgressBudget() = %+v", lim)
	}
}

// TestStatusShowsBudget: the flags' limits and the refusal reasons are in
// status, and an unset limit is derived rather than left at zero.
func TestStatusShowsBudget(t *testing.T) {
	td := startDaemonWith(t, func(c *Config) { c.EgressMaxFDs = 300 })
	b := td.status().Budget
	if b == nil || b.MaxFDs != 300 || b.MaxMemory < minEgressMemory || b.FDs != 0 {
		t.Fatalf("status budget %+v", b)
	}
	for _, r := range []string{stack.RefusedNodeFDs, stack.RefusedNodeMemory, stack.RefusedNetworkShare, stack.RefusedContainerShare, stack.RefusedContainerMax} {
		if _, ok := b.Refused[r]; !ok {
			t.Errorf("status budget lacks the reason %s: %v", r, b.Refused)
		}
	}
}
