package harness

import (
	"math"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/vrouter/vrouter/cluster"
)

func TestSerfRounds(t *testing.T) {
	for _, tt := range []struct {
		n, fanout int
		want      int
	}{
		// ln(31·9999)/1.5 = 8.43 → 9 rounds: 1.8 s at the LAN interval.
		{30, 3, 9},
		// ln(4·9999)/1.5 = 7.07 → 8.
		{3, 3, 8},
		// ln(11·9999)/1.5 = 7.74 → 8.
		{10, 3, 8},
		// fanout 1: ln(11·9999)/0.5 = 23.2 → 24.
		{10, 1, 24},
	} {
		if got := serfRounds(tt.n, tt.fanout, serfConverged); got != tt.want {
			t.Errorf("serfRounds(%d, %d) = %d, want %d", tt.n, tt.fanout, got, tt.want)
		}
	}
	// The model itself: at the returned round the curve has reached f, one
	// round earlier it had not.
	infected := func(n, fanout int, x float64) float64 {
		contact := float64(fanout) / float64(n) * 0.5
		return 1 / (1 + float64(n+1)*math.Exp(-contact*float64(n)*x))
	}
	for _, n := range []int{3, 10, 30, 100} {
		r := serfRounds(n, 3, serfConverged)
		if infected(n, 3, float64(r)) < serfConverged || infected(n, 3, float64(r-1)) >= serfConverged {
			t.Errorf("n=%d: round %d is not the first at %v", n, r, serfConverged)
		}
	}
	for _, bad := range [][2]int{{0, 3}, {3, 0}} {
		if got := serfRounds(bad[0], bad[1], 0.5); got != 0 {
			t.Errorf("serfRounds(%v) = %d, want 0", bad, got)
		}
	}
}

// TestGossipParamsMatchCluster fails when cluster/config.go changes the
// fast timing's gossip interval or starts setting a fanout: the formula
// figures of scenario 6 must use what the cluster really runs with.
func TestGossipParamsMatchCluster(t *testing.T) {
	src, err := os.ReadFile("../../cluster/config.go")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`mc\.GossipInterval = (\d+) \* time\.Millisecond`).FindSubmatch(src)
	if m == nil || string(m[1]) != "50" {
		t.Errorf("cluster/config.go fast GossipInterval is %q, bench assumes %v", m, fastGossipInterval)
	}
	if regexp.MustCompile(`GossipNodes\s*=`).Match(src) {
		t.Error("cluster/config.go sets GossipNodes; gossipParams assumes memberlist's default")
	}
	if iv, fan := gossipParams(cluster.TimingLAN); iv != 200*time.Millisecond || fan != 3 {
		t.Errorf("LAN params %v, %d", iv, fan)
	}
	if iv, _ := gossipParams(cluster.TimingFast); iv != fastGossipInterval {
		t.Errorf("fast interval %v", iv)
	}
}
