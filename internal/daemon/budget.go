package daemon

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/stack"
)

// The node egress budget's defaults. The fd reserve is what egress never
// takes: container ports (one TUN fd each), the control socket and its
// clients, gossip's TCP streams, DNS upstream sockets, WireGuard, state
// files. A quarter of RLIMIT_NOFILE, at least 256 and at most 4096 fds.
const (
	minFDReserve = 256
	maxFDReserve = 4096
	minEgressFDs = 64
	// Flow buffers may take an eighth of the host's memory by default, and
	// at least this much (small hosts, tests).
	memoryShare     = 8
	minEgressMemory = 256 << 20
)

// DefaultEgressBudget derives the egress limits from the process's
// RLIMIT_NOFILE (Go raises the soft limit to the hard one at start) and
// the host's memory.
func DefaultEgressBudget() (stack.BudgetLimits, error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return stack.BudgetLimits{}, fmt.Errorf("RLIMIT_NOFILE: %w", err)
	}
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return stack.BudgetLimits{}, fmt.Errorf("sysinfo: %w", err)
	}
	return egressBudgetFor(rl.Cur, uint64(si.Totalram)*uint64(si.Unit)), nil
}

func egressBudgetFor(nofile, memory uint64) stack.BudgetLimits {
	reserve := min(max(nofile/4, minFDReserve), maxFDReserve)
	fds := minEgressFDs
	if nofile > reserve+minEgressFDs {
		fds = int(min(nofile-reserve, 1<<30))
	}
	mem := max(int64(min(memory/memoryShare, 1<<50)), minEgressMemory)
	return stack.BudgetLimits{FDs: fds, Memory: mem}
}

// budgetStatus is the node budget's part of status.
func budgetStatus(b *stack.Budget) *control.BudgetStatus {
	st := b.Stats()
	return &control.BudgetStatus{
		MaxFDs:    st.Limits.FDs,
		FDs:       st.FDsUsed,
		MaxMemory: st.Limits.Memory,
		Memory:    st.MemoryUsed,
		Networks:  st.Networks,
		Refused:   st.Refused,
	}
}
