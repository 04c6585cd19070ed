package records

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/cluster/memnet"
	"github.com/vrouter/vrouter/internal/leaktest"
	"github.com/vrouter/vrouter/internal/poll"
)

const (
	testPN  = "pn-ad0fd6a1-d05e-40ea-bf63-c4f8a75a9d8c"
	testPN2 = "pn-0b7e3c52-9a41-4d6e-8f10-2c3d4e5f6a7b"
	testApp = "ap-a71da13f-7c70-4c00-a644-eee8558d8053"
)

var testKey = bytes.Repeat([]byte{0x42}, cluster.KeySize)

// testNet carries the gossip of every test's nodes in memory.
var testNet memnet.Network

// startNode starts a gossip node that the test's cleanup closes.
func startNode(t *testing.T, name string) *cluster.Cluster {
	t.Helper()
	c, err := cluster.New(cluster.Config{Name: name, BindAddr: "127.0.0.1", Key: testKey, Timing: cluster.TimingFast, Network: &testNet})
	if err != nil {
		t.Fatalf("cluster %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close %s: %v", name, err)
		}
	})
	return c
}

// startPair starts two joined nodes, node-a and node-b.
func startPair(t *testing.T) (a, b *cluster.Cluster) {
	t.Helper()
	leaktest.Check(t)
	a, b = startNode(t, "node-a"), startNode(t, "node-b")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Join(ctx, []string{a.LocalAddr().String()}); err != nil {
		t.Fatalf("join: %v", err)
	}
	waitFor(t, "both nodes to see each other", func() bool { return len(a.Nodes()) == 2 && len(b.Nodes()) == 2 })
	return a, b
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 10*time.Second, what, cond)
}

func renderStore(st *cluster.Store) string {
	var b strings.Builder
	for _, e := range st.List("") {
		fmt.Fprintf(&b, "%s/%s@%d ", e.Owner, e.Key, e.Version)
	}
	return b.String()
}
