package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/vrouter/vrouter/cluster/memnet"
	"github.com/vrouter/vrouter/internal/leaktest"
	"github.com/vrouter/vrouter/internal/poll"
)

var (
	testKey  = bytes.Repeat([]byte{0x42}, KeySize)
	otherKey = bytes.Repeat([]byte{0x24}, KeySize)
)

// testNet carries the gossip of every test in this package, as loopback
// would: each node holds its own address on it. In memory, a loaded
// machine delays gossip less than with sockets, and the tests open none.
// TestClusterSockets covers memberlist's own UDP and TCP transport.
var testNet memnet.Network

var _ Network = (*memnet.Network)(nil)

// testLogger sends debug logs to the test log when -v is on and
// VROUTER_CLUSTER_LOG is set; memberlist is chatty.
func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("VROUTER_CLUSTER_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testConfig(t *testing.T, name string) Config {
	return Config{
		Name:     name,
		BindAddr: "127.0.0.1",
		Key:      testKey,
		Meta:     NodeMeta{Overlay: netip.MustParseAddr("10.99.0.1")},
		Timing:   TimingFast,
		Logger:   testLogger(t),
		Network:  &testNet,
		// A restart under the same name keeps its key, as a daemon
		// restarted on the same state dir does.
		SigningKey: testSigningKey(name),
	}
}

func startNode(t *testing.T, cfg Config) *Cluster {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", cfg.Name, err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close(%s): %v", cfg.Name, err)
		}
	})
	return c
}

func join(t *testing.T, c *Cluster, seed *Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Join(ctx, []string{seed.LocalAddr().String()}); err != nil {
		t.Fatalf("%s joins %s: %v", c.name, seed.name, err)
	}
}

// startCluster starts n nodes named n1..nN, all joined to n1, and waits
// until every node sees every other alive.
func startCluster(t *testing.T, n int) []*Cluster {
	t.Helper()
	nodes := make([]*Cluster, n)
	for i := range nodes {
		nodes[i] = startNode(t, testConfig(t, fmt.Sprintf("n%d", i+1)))
		if i > 0 {
			join(t, nodes[i], nodes[0])
		}
	}
	for _, c := range nodes {
		poll.Until(t, 5*time.Second, c.name+" sees all nodes alive", func() bool {
			return countState(c, StateAlive) == n
		})
	}
	return nodes
}

func countState(c *Cluster, s NodeState) int {
	n := 0
	for _, node := range c.Nodes() {
		if node.State == s {
			n++
		}
	}
	return n
}

func nodeNamed(c *Cluster, name string) (Node, bool) {
	for _, n := range c.Nodes() {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}

// neverWithin fails if cond becomes true within the window: for things
// that must not happen (an outsider's entry showing up).
func neverWithin(t *testing.T, window time.Duration, what string, cond func() bool) {
	t.Helper()
	for start := time.Now(); time.Since(start) < window; time.Sleep(10 * time.Millisecond) {
		if cond() {
			t.Fatalf("happened: %s", what)
		}
	}
}

func hasEntry(c *Cluster, owner, key, value string) bool {
	e, ok := c.Store().Get(owner, key)
	return ok && string(e.Value) == value
}

func TestClusterPutDeleteReplicate(t *testing.T) {
	leaktest.Check(t)
	nodes := startCluster(t, 3)
	n1 := nodes[0]

	n1.Store().Put("c/x", []byte("one"))
	nodes[1].Store().Put("c/y", []byte("two"))
	for _, c := range nodes {
		d := poll.Until(t, 3*time.Second, c.name+" sees both puts", func() bool {
			return hasEntry(c, "n1", "c/x", "one") && hasEntry(c, "n2", "c/y", "two")
		})
		t.Logf("%s: puts visible after %v", c.name, d)
	}
	if got := nodes[2].Store().List("c/"); len(got) != 2 || got[0].Owner != "n1" || got[1].Owner != "n2" {
		t.Fatalf("List(c/) on n3 = %+v", got)
	}

	n1.Store().Put("c/x", []byte("updated"))
	n1.Store().Delete("c/x")
	for _, c := range nodes {
		poll.Until(t, 3*time.Second, c.name+" sees the delete", func() bool {
			_, ok := c.Store().Get("n1", "c/x")
			return !ok
		})
	}
	for _, c := range nodes {
		if st := c.Stats(); st.Tombstones != 1 || st.Entries != 1 {
			t.Errorf("%s stats %+v, want 1 entry and 1 tombstone", c.name, st)
		}
	}
}

func TestClusterLateJoinerGetsFullState(t *testing.T) {
	leaktest.Check(t)
	nodes := startCluster(t, 2)
	for i := range 20 {
		nodes[i%2].Store().Put(fmt.Sprintf("k/%02d", i), []byte("v"))
	}
	nodes[1].Store().Delete("k/01")
	for _, c := range nodes {
		poll.Until(t, 3*time.Second, c.name+" converges", func() bool { return len(c.Store().List("k/")) == 19 })
	}
	late := startNode(t, testConfig(t, "late"))
	join(t, late, nodes[1])
	// The join's push-pull carries the whole store: no gossip round needed,
	// so this holds right after Join returns.
	if got := len(late.Store().List("k/")); got != 19 {
		t.Fatalf("late joiner sees %d entries right after Join, want 19", got)
	}
	if st := late.Stats(); st.Tombstones != 1 {
		t.Fatalf("late joiner did not get the tombstone: %+v", st)
	}
}

func TestClusterConcurrentClaim(t *testing.T) {
	leaktest.Check(t)
	nodes := startCluster(t, 3)
	a, b := nodes[1], nodes[2]
	settle := a.SettleTime()
	if settle <= 0 || settle != b.SettleTime() {
		t.Fatalf("SettleTime = %v / %v", settle, b.SettleTime())
	}
	t.Logf("settle %v", settle)
	for round := range 5 {
		key := fmt.Sprintf("addr/10.240.0.%d", round+2)
		var wg sync.WaitGroup
		var won [2]bool
		var errs [2]error
		start := make(chan struct{})
		for i, c := range []*Cluster{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				won[i], errs[i] = c.Store().Claim(context.Background(), key, []byte(c.name), settle)
			}()
		}
		close(start)
		wg.Wait()
		if errs[0] != nil || errs[1] != nil {
			t.Fatalf("%s: Claim errors %v", key, errs)
		}
		if won[0] == won[1] {
			t.Fatalf("%s: won = %v, want exactly one winner", key, won)
		}
		winner := a.name
		if won[1] {
			winner = b.name
		}
		for _, c := range nodes {
			poll.Until(t, 2*time.Second, c.name+" agrees on the winner of "+key, func() bool {
				w, ok := c.Store().Winner(key)
				return ok && w.Owner == winner
			})
		}
		// The loser withdraws, as the daemon does; the winner stays.
		loser := a
		if winner == a.name {
			loser = b
		}
		loser.Store().Delete(key)
	}
}

func TestClusterKillHidesEntries(t *testing.T) {
	leaktest.Check(t)
	nodes := startCluster(t, 3)
	victim := nodes[2]
	victim.Store().Put("c/victim", []byte("v"))
	others := nodes[:2]
	for _, c := range others {
		poll.Until(t, 3*time.Second, c.name+" sees the victim's entry", func() bool {
			return hasEntry(c, "n3", "c/victim", "v")
		})
	}

	// Watch for suspicion: only the node whose own probe fails first shows
	// it, for about SuspicionMult × ProbeInterval.
	var suspected sync.Map
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range others {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if n, _ := nodeNamed(c, "n3"); n.State == StateSuspect {
					suspected.Store(c.name, true)
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}

	killed := time.Now()
	victim.Kill()
	for _, c := range others {
		poll.Until(t, 5*time.Second, c.name+" hides the dead node's entries", func() bool {
			_, ok := c.Store().Get("n3", "c/victim")
			return !ok
		})
		hidden := time.Since(killed)
		n, _ := nodeNamed(c, "n3")
		if n.State != StateDead {
			t.Errorf("%s: n3 is %v once its entries are hidden, want dead", c.name, n.State)
		}
		t.Logf("TimingFast, 3 nodes: %s hid n3's entries %v after Kill", c.name, hidden.Round(time.Millisecond))
		if st := c.Stats(); st.Hidden != 1 {
			t.Errorf("%s: stats %+v, want 1 hidden entry", c.name, st)
		}
	}
	close(stop)
	wg.Wait()
	n := 0
	suspected.Range(func(any, any) bool { n++; return true })
	if n == 0 {
		t.Error("no node showed n3 as suspect before declaring it dead")
	}

	// Dead nodes are reaped after GossipToTheDeadTime, their entries with them.
	d := poll.Until(t, 10*time.Second, "n3 reaped", func() bool {
		_, ok := nodeNamed(nodes[0], "n3")
		return !ok
	})
	t.Logf("n3 reaped %v after it was hidden", d.Round(time.Millisecond))
	if st := nodes[0].Stats(); st.Hidden != 0 {
		t.Errorf("reaped node's entries kept: %+v", st)
	}
}

// TestClusterRestart: a node killed and restarted under the same name (new
// BootID, new port, before the old life is reaped) joins again; its old
// life's entries stay gone and its new ones appear.
func TestClusterRestart(t *testing.T) {
	leaktest.Check(t)
	nodes := startCluster(t, 2)
	old := nodes[1]
	old.Store().Put("c/old", []byte("old"))
	poll.Until(t, 3*time.Second, "n1 sees n2's entry", func() bool { return hasEntry(nodes[0], "n2", "c/old", "old") })
	old.Kill()
	poll.Until(t, 5*time.Second, "n1 sees n2 dead", func() bool {
		n, _ := nodeNamed(nodes[0], "n2")
		return n.State == StateDead
	})

	reborn := startNode(t, testConfig(t, "n2"))
	join(t, reborn, nodes[0])
	reborn.Store().Put("c/new", []byte("new"))
	poll.Until(t, 3*time.Second, "n1 sees the new life's entry", func() bool { return hasEntry(nodes[0], "n2", "c/new", "new") })
	if _, ok := nodes[0].Store().Get("n2", "c/old"); ok {
		t.Fatal("the previous life's entry came back")
	}
	// Alive at the new address with the new BootID; on a loaded machine
	// memberlist's fast timings can leave it suspect for a moment.
	var n Node
	poll.Until(t, 3*time.Second, "n1 sees n2's new life alive", func() bool {
		n, _ = nodeNamed(nodes[0], "n2")
		return n.State == StateAlive && n.Addr == reborn.LocalAddr() && n.Meta.BootID == reborn.meta.BootID
	})
	// The restarted node never holds its previous life's entries either.
	if _, ok := reborn.Store().Get("n2", "c/old"); ok {
		t.Fatal("restarted node accepted its previous life's entry")
	}
}

func TestClusterCloseIsLeave(t *testing.T) {
	leaktest.Check(t)
	nodes := startCluster(t, 3)
	nodes[2].Store().Put("c/x", []byte("v"))
	poll.Until(t, 3*time.Second, "n1 sees n3's entry", func() bool { return hasEntry(nodes[0], "n3", "c/x", "v") })
	start := time.Now()
	if err := nodes[2].Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("graceful Close took %v", time.Since(start).Round(time.Millisecond))
	if err := nodes[2].Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for _, c := range nodes[:2] {
		poll.Until(t, 3*time.Second, c.name+" sees n3 left", func() bool {
			n, _ := nodeNamed(c, "n3")
			return n.State == StateLeft
		})
		if _, ok := c.Store().Get("n3", "c/x"); ok {
			t.Errorf("%s still shows the left node's entry", c.name)
		}
	}
	if err := nodes[2].Join(context.Background(), []string{nodes[0].LocalAddr().String()}); !errors.Is(err, ErrClosed) {
		t.Errorf("Join after Close: %v, want ErrClosed", err)
	}
	if err := nodes[2].SetMeta(NodeMeta{}); !errors.Is(err, ErrClosed) {
		t.Errorf("SetMeta after Close: %v, want ErrClosed", err)
	}
}

func TestClusterWrongKey(t *testing.T) {
	leaktest.Check(t)
	nodes := startCluster(t, 2)
	cfg := testConfig(t, "intruder")
	cfg.Key = otherKey
	in := startNode(t, cfg)
	in.Store().Put("c/evil", []byte("x"))
	for _, seed := range nodes {
		err := in.Join(context.Background(), []string{seed.LocalAddr().String()})
		if !errors.Is(err, ErrKeyMismatch) {
			t.Fatalf("join with the wrong key: %v, want ErrKeyMismatch", err)
		}
		t.Logf("wrong key: %v", err)
	}
	neverWithin(t, time.Second, "the intruder or its entry appears", func() bool {
		for _, c := range nodes {
			if _, ok := nodeNamed(c, "intruder"); ok {
				return true
			}
			if st := c.Stats(); st.Entries+st.Hidden != 0 {
				return true
			}
		}
		return len(in.Nodes()) != 1
	})
}

func TestClusterNoSeed(t *testing.T) {
	leaktest.Check(t)
	c := startNode(t, testConfig(t, "alone"))
	// An address nobody holds.
	tr, err := testNet.Listen(netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	addr := tr.(*memnet.Transport).Addr().String()
	if err := tr.Shutdown(); err != nil {
		t.Fatal(err)
	}
	err = c.Join(context.Background(), []string{addr})
	if !errors.Is(err, ErrNoSeed) {
		t.Fatalf("join to a dead seed: %v, want ErrNoSeed", err)
	}
	t.Logf("no seed: %v", err)
	if c.SettleTime() != 0 {
		t.Errorf("SettleTime alone = %v, want 0", c.SettleTime())
	}
	// Alone, a claim needs no settle and wins.
	if ok, err := c.Store().Claim(context.Background(), "k", nil, c.SettleTime()); err != nil || !ok {
		t.Errorf("Claim alone = %v, %v", ok, err)
	}
}

func TestClusterDuplicateName(t *testing.T) {
	leaktest.Check(t)
	nodes := startCluster(t, 2)
	n1 := nodes[0]
	for _, seed := range nodes {
		t.Run("seed "+seed.name, func(t *testing.T) {
			dup := startNode(t, testConfig(t, "n1"))
			dup.Store().Put("c/dup", []byte("x"))
			err := dup.Join(context.Background(), []string{seed.LocalAddr().String()})
			if !errors.Is(err, ErrNameInUse) {
				t.Fatalf("join under a used name: %v, want ErrNameInUse", err)
			}
			if want := fmt.Sprintf("node name %q is already used by %s", "n1", n1.LocalAddr()); !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q does not say %q", err, want)
			}
			t.Logf("duplicate name: %v", err)
			neverWithin(t, 500*time.Millisecond, "the cluster changes its n1", func() bool {
				for _, c := range nodes {
					n, ok := nodeNamed(c, "n1")
					if !ok || n.Addr != n1.LocalAddr() || n.State != StateAlive {
						return true
					}
					if _, ok := c.Store().Get("n1", "c/dup"); ok {
						return true
					}
				}
				return len(dup.Nodes()) != 1
			})
			if err := dup.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
	// Closing the impostor (a graceful leave) did not make n1 look left.
	neverWithin(t, 300*time.Millisecond, "n2 sees n1 not alive", func() bool {
		n, _ := nodeNamed(nodes[1], "n1")
		return n.State != StateAlive
	})
}

func TestClusterChanges(t *testing.T) {
	leaktest.Check(t)
	nodes := startCluster(t, 2)
	a, b := nodes[0], nodes[1]
	drain := func(c *Cluster) {
		select {
		case <-c.Changes():
		default:
		}
	}
	fired := func(c *Cluster, what string) {
		t.Helper()
		select {
		case <-c.Changes():
		case <-time.After(3 * time.Second):
			t.Fatalf("%s: Changes did not fire for %s", c.name, what)
		}
	}
	drain(a)
	a.Store().Put("k", []byte("v"))
	fired(a, "a local put")

	drain(b)
	a.Store().Put("k2", []byte("v"))
	fired(b, "a remote put")

	drain(b)
	a.Store().Delete("k2")
	fired(b, "a remote delete")

	drain(a)
	meta := a.meta
	meta.Draining = true
	if err := a.SetMeta(meta); err != nil {
		t.Fatal(err)
	}
	fired(a, "SetMeta")
	poll.Until(t, 3*time.Second, "b sees a draining", func() bool {
		n, _ := nodeNamed(b, "n1")
		return n.Meta.Draining
	})

	drain(a)
	c := startNode(t, testConfig(t, "n3"))
	join(t, c, b)
	fired(a, "a node join")
}

func TestClusterGarbageMessages(t *testing.T) {
	leaktest.Check(t)
	nodes := startCluster(t, 2)
	a, b := nodes[0], nodes[1]
	var target *memberlist.Node
	for _, m := range a.ml.Members() {
		if m.Name == b.name {
			target = m
		}
	}
	if target == nil {
		t.Fatal("b not in a's members")
	}
	for _, msg := range [][]byte{{9, 1, 0, 0}, {wireVersion, 9}, {wireVersion, msgRecords, 0, 1, 0}} {
		if err := a.ml.SendBestEffort(target, msg); err != nil {
			t.Fatal(err)
		}
	}
	poll.Until(t, 3*time.Second, "b counts the dropped messages", func() bool {
		st := b.Stats()
		return st.MsgsBadVersion == 1 && st.MsgsMalformed == 2
	})
	// And still works.
	a.Store().Put("k", []byte("v"))
	poll.Until(t, 3*time.Second, "b still merges", func() bool { return hasEntry(b, "n1", "k", "v") })
}

// TestClusterSockets runs the default transport, memberlist's UDP and TCP
// sockets on loopback, as the daemon does in production: join, replicate,
// detect a crash, refuse a seed nobody listens at.
func TestClusterSockets(t *testing.T) {
	leaktest.Check(t)
	var nodes []*Cluster
	for _, name := range []string{"s1", "s2", "s3"} {
		cfg := testConfig(t, name)
		cfg.Network = nil
		c := startNode(t, cfg)
		if len(nodes) > 0 {
			join(t, c, nodes[0])
		}
		nodes = append(nodes, c)
	}
	nodes[2].Store().Put("c/x", []byte("v"))
	for _, c := range nodes[:2] {
		poll.Until(t, 5*time.Second, c.name+" sees s3's entry", func() bool { return hasEntry(c, "s3", "c/x", "v") })
	}
	nodes[2].Kill()
	for _, c := range nodes[:2] {
		poll.Until(t, 10*time.Second, c.name+" sees s3 dead", func() bool {
			n, _ := nodeNamed(c, "s3")
			return n.State == StateDead
		})
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	if err := nodes[0].Join(context.Background(), []string{addr}); !errors.Is(err, ErrNoSeed) {
		t.Fatalf("join to a closed port: %v, want ErrNoSeed", err)
	}
}

func TestClusterConfigErrors(t *testing.T) {
	base := testConfig(t, "x")
	tests := []struct {
		name string
		mod  func(*Config)
	}{
		{"no key", func(c *Config) { c.Key = nil }},
		{"short key", func(c *Config) { c.Key = testKey[:16] }},
		{"no name", func(c *Config) { c.Name = "" }},
		{"long name", func(c *Config) { c.Name = strings.Repeat("n", MaxNameLen+1) }},
		{"bad bind", func(c *Config) { c.BindAddr = "localhost" }},
		{"wildcard without advertise", func(c *Config) { c.BindAddr = "0.0.0.0" }},
		{"wildcard advertise", func(c *Config) { c.AdvertiseAddr = "0.0.0.0" }},
		{"bad timing", func(c *Config) { c.Timing = 7 }},
		{"meta too large", func(c *Config) { c.Meta = fullMeta(40) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.mod(&cfg)
			c, err := New(cfg)
			if err == nil {
				c.Kill()
				t.Fatal("New accepted the config")
			}
		})
	}
}

func TestClusterSetMetaChecks(t *testing.T) {
	leaktest.Check(t)
	c := startNode(t, testConfig(t, "m"))
	if err := c.SetMeta(fullMeta(40)); err == nil {
		t.Error("oversized meta accepted")
	}
	m := c.meta
	m.BootID++
	if err := c.SetMeta(m); err == nil {
		t.Error("BootID change accepted")
	}
	m.BootID = 0
	m.Gateway = true
	if err := c.SetMeta(m); err != nil {
		t.Fatal(err)
	}
	self, _ := nodeNamed(c, "m")
	if !self.Self || !self.Meta.Gateway || self.Meta.BootID == 0 {
		t.Fatalf("self after SetMeta: %+v", self)
	}
}

// TestClusterKillLAN measures detection with production timings. Slow
// (~10 s), so only with VROUTER_CLUSTER_LAN=1.
func TestClusterKillLAN(t *testing.T) {
	if os.Getenv("VROUTER_CLUSTER_LAN") == "" {
		t.Skip("set VROUTER_CLUSTER_LAN=1 to measure TimingLAN detection")
	}
	leaktest.Check(t)
	var nodes []*Cluster
	for i := range 3 {
		cfg := testConfig(t, fmt.Sprintf("lan%d", i))
		cfg.Timing = TimingLAN
		cfg.Network = nil // real sockets: this measures production
		nodes = append(nodes, startNode(t, cfg))
		if i > 0 {
			join(t, nodes[i], nodes[0])
		}
	}
	nodes[2].Store().Put("k", []byte("v"))
	poll.Until(t, 5*time.Second, "lan0 sees the entry", func() bool { return hasEntry(nodes[0], "lan2", "k", "v") })
	t.Logf("TimingLAN settle with 3 nodes: %v", nodes[0].SettleTime())
	killed := time.Now()
	nodes[2].Kill()
	for _, c := range nodes[:2] {
		poll.Until(t, 30*time.Second, c.name+" hides the entry", func() bool {
			_, ok := c.Store().Get("lan2", "k")
			return !ok
		})
		t.Logf("TimingLAN, 3 nodes: %s hid the entry %v after Kill", c.name, time.Since(killed).Round(time.Millisecond))
	}
}

// TestRepairIntervalScales: the repair bound follows memberlist's stretch of
// the push-pull interval beyond 32 nodes; a wait built on the unscaled
// interval gives up on a 100-node cluster before its first repair.
func TestRepairIntervalScales(t *testing.T) {
	const iv = 2 * time.Second
	for _, tt := range []struct {
		n    int
		want time.Duration
	}{
		{1, iv}, {3, iv}, {32, iv},
		{33, 2 * iv}, {64, 2 * iv},
		{65, 3 * iv}, {100, 3 * iv}, {128, 3 * iv},
		{129, 4 * iv}, {1000, 6 * iv},
	} {
		if got := pushPullEvery(iv, tt.n); got != tt.want {
			t.Errorf("pushPullEvery(%v, %d) = %v, want %v", iv, tt.n, got, tt.want)
		}
	}
	c := startNode(t, testConfig(t, "repair"))
	if got, want := c.RepairInterval(), c.mc.PushPullInterval; got != want {
		t.Errorf("RepairInterval alone = %v, want %v", got, want)
	}
	// Asked for a size it has not seen yet: the interval at that size.
	if got, want := c.RepairIntervalAt(41), 2*c.mc.PushPullInterval; got != want {
		t.Errorf("RepairIntervalAt(41) alone = %v, want %v", got, want)
	}
	// The estimate RepairInterval reads is the one the broadcast queue
	// uses (self + peers up); 100 as if the cluster had grown.
	c.numNodes.Store(100)
	if got, want := c.RepairInterval(), 3*c.mc.PushPullInterval; got != want {
		t.Errorf("RepairInterval at 100 nodes = %v, want %v", got, want)
	}
	c.numNodes.Store(1)
}

// TestClusterNoCompression: gossip is sent uncompressed (LZW's per-packet
// dictionary was a fifth of the gossip CPU) and a node still takes a
// compressed push-pull and compressed gossip from a peer that compresses,
// as nodes of an older version do.
func TestClusterNoCompression(t *testing.T) {
	cfg := testConfig(t, "plain")
	mc, err := cfg.memberlistConfig()
	if err != nil {
		t.Fatal(err)
	}
	if mc.EnableCompression {
		t.Fatal("memberlist compression is on")
	}
	a := startNode(t, cfg)
	old := testConfig(t, "compressing")
	old.compress = true
	b := startNode(t, old)
	join(t, b, a)
	for _, c := range []*Cluster{a, b} {
		poll.Until(t, 5*time.Second, c.name+" sees both alive", func() bool {
			return countState(c, StateAlive) == 2
		})
	}
	b.Store().Put("k", []byte("from-compressing"))
	a.Store().Put("k", []byte("from-plain"))
	poll.Until(t, 5*time.Second, "records both ways", func() bool {
		return hasEntry(a, "compressing", "k", "from-compressing") && hasEntry(b, "plain", "k", "from-plain")
	})
}
