//go:build race

package stack

// raceEnabled: the race detector makes sync.Pool drop items at random, so
// the allocation tests of code on gVisor's pools cannot hold.
const raceEnabled = true
