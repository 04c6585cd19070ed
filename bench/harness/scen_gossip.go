package harness

import (
	"context"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/vrouter/vrouter/bench/report"
	"github.com/vrouter/vrouter/bench/stats"
	"github.com/vrouter/vrouter/cluster"
)

// scenGossip: N clusters in this process on loopback; one node puts a
// container-sized record and the time until every other node's store
// shows it is measured, beside Serf's formula for the configured gossip
// interval and fanout.
func (s *Suite) scenGossip(ctx context.Context, sc *scope, out *report.Scenario) error {
	for _, timing := range []cluster.Timing{cluster.TimingFast, cluster.TimingLAN} {
		interval, fanout := gossipParams(timing)
		for _, n := range s.p.gossipSizes {
			rounds := serfRounds(n, fanout, serfConverged)
			formula := report.Figure{
				Name:  fmt.Sprintf("Serf formula: %d rounds × %v (fanout %d, 99.99%%)", rounds, interval, fanout),
				Value: float64(time.Duration(rounds)*interval) / float64(time.Millisecond),
				// The same curve where less than half a node is left
				// without the record: "all N" in expectation.
				Detail: map[string]float64{"all_but_half_a_node_ms": float64(time.Duration(
					serfRounds(n, fanout, (float64(n)-0.5)/float64(n)))*interval) / float64(time.Millisecond)},
			}
			f := report.Figure{Name: "vrouter cluster"}
			ms, late, err := s.gossipTrials(ctx, timing, n)
			if err != nil {
				f.Error = err.Error()
			} else {
				f.Samples = ms
				f.Value = stats.Median(ms)
				sum := stats.Summarize(append([]float64(nil), ms...))
				f.Detail = map[string]float64{"p90_ms": sum.P90, "max_ms": sum.Max, "min_ms": sum.Min,
					"late_trials": float64(late)}
			}
			out.Rows = append(out.Rows, report.Row{
				Metric: fmt.Sprintf("N=%d, %s timing: record on all nodes, median", n, timing),
				Unit:   "ms", Better: "lower", Chart: "latency", Subject: f, Baseline: &formula,
			})
		}
	}
	out.Notes = append(out.Notes,
		fmt.Sprintf("%d puts per size, each by the next node in turn; a record counts as visible when Store().Get on every other node returns it (polled every millisecond)", s.p.gossipTrials),
		"late_trials: puts that some node saw only after twice the broadcast phase (memberlist's retransmit rounds for N, Cluster.SettleTime): the epidemic missed it and push-pull repaired it; the wait per put is 30 s or three push-pull intervals, whichever is longer, and a record missing after that fails the figure",
		"formula: Serf's convergence simulator (logistic epidemic, no loss), rounds until 99.99% of the nodes have the broadcast, times memberlist's GossipInterval; see bench/README.md")
	return nil
}

// gossipTrials starts n cluster nodes in this process, waits until all see
// all alive, and times s.p.gossipTrials puts, in milliseconds. late counts
// the puts the broadcasts did not bring everywhere: a node the epidemic
// missed (a lost packet, an unlucky draw of targets) has it only after a
// push-pull, which is memberlist's repair and part of the figure.
func (s *Suite) gossipTrials(ctx context.Context, timing cluster.Timing, n int) (ms []float64, late int, err error) {
	key := make([]byte, cluster.KeySize)
	_, _ = rand.Read(key)
	nodes := make([]*cluster.Cluster, 0, n)
	defer func() {
		var wg sync.WaitGroup
		for _, c := range nodes {
			wg.Go(c.Kill)
		}
		wg.Wait()
	}()
	for i := range n {
		c, err := cluster.New(cluster.Config{
			Name: fmt.Sprintf("vrb-%s-g%d", s.runID, i), BindAddr: "127.0.0.1", Key: key, Timing: timing,
		})
		if err != nil {
			return nil, 0, fmt.Errorf("node %d: %w", i, err)
		}
		nodes = append(nodes, c)
	}
	if err := joinInWaves(ctx, nodes); err != nil {
		return nil, 0, err
	}
	value := []byte(`{"id":"c-0f3a9b2c41d7","app":"ap-a71da13f-7c70-4c00-a644-eee8558d8053","type":"web","number":1,"node":"` +
		strings.Repeat("n", 16) + `","attached_at":"2025-01-01T00:00:00Z"}`)
	wait := max(30*time.Second, 3*nodes[0].RepairInterval())
	for t := range s.p.gossipTrials {
		owner := nodes[t%n]
		k := fmt.Sprintf("c/pn-00000000-0000-4000-8000-%012d/10.240.%d.%d", t, t/250, t%250+1)
		start := time.Now()
		e := owner.Store().Put(k, value)
		// waitFor's 50 ms step is the fast timing's whole gossip interval:
		// poll finely here.
		var missing int
		deadline := start.Add(wait)
		for {
			missing = 0
			for _, c := range nodes {
				if c == owner {
					continue
				}
				if _, ok := c.Store().Get(e.Owner, k); !ok {
					missing++
				}
			}
			if missing == 0 || time.Now().After(deadline) || ctx.Err() != nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if missing > 0 {
			return nil, 0, fmt.Errorf("record %s: %d of %d nodes still without it after %v (%v)", k, missing, n-1, wait, ctx.Err())
		}
		took := time.Since(start)
		if took > 2*owner.SettleTime() {
			late++
		}
		ms = append(ms, float64(took)/float64(time.Millisecond))
	}
	return ms, late, nil
}

// Joining 100 nodes of one process to node 0 one after the other fails:
// every join is a TCP push-pull of the whole membership with the same
// seed, which under that load misses memberlist's TCP timeout (1 s at the
// fast timing), and a burst of newcomers' alive messages outruns the
// gossip that spreads them, so that some node still misses a few after a
// push-pull interval. A fleet's daemons join the same way: several seeds,
// retried with backoff (internal/daemon joinLoop), so the harness does too.
const (
	joinWave     = 10 // nodes that join before the cluster must converge again
	joinParallel = 4  // joins of a wave at a time
	joinSeeds    = 3  // random members of earlier waves each newcomer contacts
	joinTries    = 4
)

// joinInWaves joins nodes[1:] to nodes[0] in waves of joinWave, each node
// to joinSeeds random members of the earlier waves, and waits after each
// wave until every member sees every member alive.
func joinInWaves(ctx context.Context, nodes []*cluster.Cluster) error {
	for lo := 1; lo < len(nodes); lo += joinWave {
		hi := min(lo+joinWave, len(nodes))
		members := nodes[:lo]
		sem := make(chan struct{}, joinParallel)
		errs := make([]error, hi-lo)
		var wg sync.WaitGroup
		for i := lo; i < hi; i++ {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				errs[i-lo] = joinRetry(ctx, nodes[i], pickSeeds(members, joinSeeds))
			})
		}
		wg.Wait()
		for k, err := range errs {
			if err != nil {
				return fmt.Errorf("node %d join: %w", lo+k, err)
			}
		}
		if err := waitAlive(ctx, nodes[:hi]); err != nil {
			return err
		}
	}
	return nil
}

// joinRetry is Cluster.Join with the daemon's retry: a seed too busy to
// answer within the TCP timeout is tried again after a pause.
func joinRetry(ctx context.Context, c *cluster.Cluster, seeds []string) error {
	var err error
	for try := range joinTries {
		jctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err = c.Join(jctx, seeds)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
		t := time.NewTimer(time.Duration(250<<try) * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
	return fmt.Errorf("%d tries: %w", joinTries, err)
}

func pickSeeds(members []*cluster.Cluster, k int) []string {
	idx := mrand.Perm(len(members))
	seeds := make([]string, 0, k)
	for _, i := range idx[:min(k, len(idx))] {
		seeds = append(seeds, members[i].LocalAddr().String())
	}
	return seeds
}

// waitAlive waits until every node sees all of nodes up (alive, or
// suspected by its own probes: a suspect's records stay visible, and 100
// nodes of one process at the fast timing's 100 ms probe timeout suspect
// each other now and then on a loaded machine): two push-pull intervals
// at the size the wave grows the cluster to (each node repairs its view
// once per interval; node 0's own count may still be the old size, which
// at lan timing past 32 nodes is half the interval: a node that missed
// one newcomer's alive message once waited out 60 s of a 120 s repair)
// and at least 60 s, time for a node falsely declared dead to refute it.
func waitAlive(ctx context.Context, nodes []*cluster.Cluster) error {
	n := len(nodes)
	wait := max(60*time.Second, 2*nodes[0].RepairIntervalAt(n))
	return waitFor(ctx, wait, fmt.Sprintf("%d nodes see each other up", n), func() error {
		for i, c := range nodes {
			up, dead := 0, 0
			for _, nd := range c.Nodes() {
				switch nd.State {
				case cluster.StateAlive, cluster.StateSuspect:
					up++
				default:
					dead++
				}
			}
			if up != n {
				return fmt.Errorf("node %d sees %d up, %d dead or left", i, up, dead)
			}
		}
		return nil
	})
}
