package harness

import (
	"math"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/vrouter/vrouter/cluster"
)

// serfConverged is the fraction of nodes at which Serf's convergence
// simulator ends its curve (maxConverge in its _simulator.js).
const serfConverged = 0.9999

// serfRounds is the first whole gossip round at which Serf's convergence
// model has a broadcast at fraction f of n nodes, without packet loss or
// failed nodes. The model (hashicorp/serf, website simulator,
// convergenceAtRound) is the logistic curve of an epidemic:
//
//	contact     = fanout/n · (1 − loss) · (1 − failed) · 0.5
//	infected(x) = n / (1 + (n+1) · e^(−contact · n · x))
//
// so infected(x)/n ≥ f from x = ln((n+1)·f/(1−f)) / (fanout/2) on.
func serfRounds(n, fanout int, f float64) int {
	if n < 1 || fanout < 1 || !(f > 0 && f < 1) {
		return 0
	}
	x := math.Log(float64(n+1)*f/(1-f)) / (float64(fanout) / 2)
	r := int(math.Ceil(x - 1e-9))
	return max(r, 0)
}

// gossipParams are the gossip interval and fanout memberlist uses for a
// cluster timing. They mirror cluster/config.go (memberlistConfig): LAN is
// memberlist.DefaultLANConfig; fast overrides GossipInterval to 50 ms and
// keeps the fanout (GossipNodes). TestGossipParamsMatchCluster keeps the
// two in step.
func gossipParams(t cluster.Timing) (interval time.Duration, fanout int) {
	lan := memberlist.DefaultLANConfig()
	if t == cluster.TimingFast {
		return fastGossipInterval, lan.GossipNodes
	}
	return lan.GossipInterval, lan.GossipNodes
}

const fastGossipInterval = 50 * time.Millisecond
