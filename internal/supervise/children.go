package supervise

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// WorkerOf returns the pid of the worker a supervisor pid runs (its
// child; during an upgrade the newest one), for tools that measure the
// forwarding process (bench, tests). It reads /proc/PID/task/*/children.
func WorkerOf(pid int) (int, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	if err != nil || len(tasks) == 0 {
		return 0, fmt.Errorf("worker of %d: no such process", pid)
	}
	best := 0
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil && c > best {
				best = c
			}
		}
	}
	if best == 0 {
		return 0, fmt.Errorf("worker of %d: no worker running", pid)
	}
	return best, nil
}
