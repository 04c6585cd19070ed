package daemon

import (
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/keys"
	"github.com/vrouter/vrouter/internal/poll"
	"github.com/vrouter/vrouter/internal/records"
)

// startPair starts two daemons sharing a cluster key; b joins a.
func startPair(t *testing.T) (a, b *testDaemon) {
	t.Helper()
	keyFile := filepath.Join(t.TempDir(), "cluster.key")
	k, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, []byte(keys.Encode(k)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a = startDaemonWith(t, func(c *Config) {
		c.Name, c.ClusterKeyFile, c.Timing = "node-a", keyFile, cluster.TimingFast
	})
	b = startDaemonNoLeakCheck(t, func(c *Config) {
		c.Name, c.ClusterKeyFile, c.Timing = "node-b", keyFile, cluster.TimingFast
		c.Join = []string{a.cluster.LocalAddr().String()}
	})
	waitFor(t, "b to join a", func() bool { return alive(a) == 2 && alive(b) == 2 })
	return a, b
}

func alive(td *testDaemon) int {
	n := 0
	for _, p := range td.peers() {
		if p.State == "alive" {
			n++
		}
	}
	return n
}

// waitFor is poll.Until with the package's timeout: gossip, failure
// detection and claims settle within it even on a loaded machine.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 10*time.Second, what, cond)
}

func containersOf(t *testing.T, td *testDaemon) []control.Container {
	t.Helper()
	var cs []control.Container
	if err := td.call(t, &control.Request{Op: "containers"}, false, &cs); err != nil {
		t.Fatal(err)
	}
	return cs
}

func TestClusterWideAllocation(t *testing.T) {
	a, b := startPair(t)
	ca, err := a.attach(t, control.AttachRequest{Network: testPN, App: testApp, Type: "web"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a's container on b", func() bool { return len(containersOf(t, b)) == 1 })
	cb, err := b.attach(t, control.AttachRequest{Network: testPN, App: testApp, Type: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if ca.IP != "10.240.0.1" || cb.IP != "10.240.0.2" || ca.Number != 1 || cb.Number != 2 {
		t.Fatalf("a got %s #%d, b got %s #%d; want .1 #1 and .2 #2", ca.IP, ca.Number, cb.IP, cb.Number)
	}
	if _, err := b.attach(t, control.AttachRequest{Network: testPN, App: testApp, Type: "web", IP: ca.IP}); errCode(err) != "conflict" {
		t.Fatalf("b taking a's address: %v, want conflict", err)
	}
	waitFor(t, "both containers on both nodes", func() bool {
		return len(containersOf(t, a)) == 2 && len(containersOf(t, b)) == 2
	})
	for _, c := range containersOf(t, b) {
		if c.ID == ca.ID && (c.Node != "node-a" || c.IP != ca.IP || len(c.Names) != 3) {
			t.Fatalf("b's view of a's container: %+v", c)
		}
	}
	var peers []control.Peer
	if err := b.call(t, &control.Request{Op: "peers"}, false, &peers); err != nil {
		t.Fatal(err)
	}
	if len(peers) != 2 || peers[0].Name != "node-a" || peers[1].Name != "node-b" || !peers[1].Self || peers[0].Overlay == peers[1].Overlay {
		t.Fatalf("peers = %+v", peers)
	}
	// Detach withdraws the record everywhere.
	if err := a.call(t, &control.Request{Op: "detach", Detach: &control.DetachRequest{ID: ca.ID}}, false, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the detached container to vanish from b", func() bool { return len(containersOf(t, b)) == 1 })
}

// TestConcurrentClaims attaches the same address on both nodes at once:
// exactly one wins and both nodes agree on who.
func TestConcurrentClaims(t *testing.T) {
	a, b := startPair(t)
	for round, ip := range []string{"10.240.2.1", "10.240.2.2", "10.240.2.3"} {
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, td := range []*testDaemon{a, b} {
			wg.Go(func() {
				_, errs[i] = td.attach(t, control.AttachRequest{Network: testPN, App: testApp, Type: "worker", IP: ip})
			})
		}
		wg.Wait()
		if (errs[0] == nil) == (errs[1] == nil) {
			t.Fatalf("round %d: errors %v / %v, want exactly one success", round, errs[0], errs[1])
		}
		for _, err := range errs {
			if err != nil && errCode(err) != "conflict" {
				t.Fatalf("round %d: loser got %v, want conflict", round, err)
			}
		}
	}
	waitFor(t, "both nodes to agree", func() bool {
		return len(containersOf(t, a)) == 3 && len(containersOf(t, b)) == 3
	})
}

func TestNodeLeaveWithdrawsContainers(t *testing.T) {
	a, b := startPair(t)
	if _, err := a.attach(t, control.AttachRequest{Network: testPN, App: testApp, Type: "web"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a's container on b", func() bool { return len(containersOf(t, b)) == 1 })
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a's container to vanish from b", func() bool { return len(containersOf(t, b)) == 0 })
	// Its address is free again for b.
	c, err := b.attach(t, control.AttachRequest{Network: testPN, App: testApp, Type: "web"})
	if err != nil || c.IP != "10.240.0.1" {
		t.Fatalf("attach after a left: %+v, %v", c, err)
	}
}

func TestWrongKeyCannotJoin(t *testing.T) {
	a := startDaemonWith(t, func(c *Config) { c.Name, c.Timing = "node-a", cluster.TimingFast })
	b := startDaemonNoLeakCheck(t, func(c *Config) {
		c.Name, c.Timing = "node-b", cluster.TimingFast // its own generated key
		c.Join = []string{a.cluster.LocalAddr().String()}
	})
	if _, err := b.attach(t, control.AttachRequest{Network: testPN, App: testApp, Type: "web"}); err != nil {
		t.Fatal(err) // b still serves its own containers
	}
	time.Sleep(500 * time.Millisecond) // several gossip rounds of TimingFast
	if n := alive(a); n != 1 {
		t.Fatalf("a sees %d alive nodes, want 1", n)
	}
	if cs := containersOf(t, a); len(cs) != 0 {
		t.Fatalf("a sees b's containers: %+v", cs)
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "k")
	k1, created, err := loadOrCreateKey(path)
	if err != nil || !created || len(k1) != keySize {
		t.Fatalf("create: %v %v %d", err, created, len(k1))
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", st.Mode())
	}
	k2, created, err := loadOrCreateKey(path)
	if err != nil || created || string(k1) != string(k2) {
		t.Fatal("second load did not return the same key")
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("not base64!\n"), 0o600)
	if _, err := readKeyFile(bad); err == nil {
		t.Fatal("garbage key accepted")
	}
	if _, err := readKeyFile(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing key file accepted")
	}
}

// TestFenceDetachesLoser: a container whose address claim the store
// withdrew (an older claim won after a partition healed) is detached and
// its claims released; other containers stay.
func TestFenceDetachesLoser(t *testing.T) {
	td := startDaemon(t)
	a, err := td.attach(t, control.AttachRequest{Network: testPN, App: testApp, Type: "web", ContainerKey: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := td.attach(t, control.AttachRequest{Network: testPN, App: testApp, Type: "web", ContainerKey: "k2"})
	if err != nil {
		t.Fatal(err)
	}
	td.fence([]string{records.ContainerKey(testPN, netip.MustParseAddr(a.IP)), "v/unrelated"})
	cs := containersOf(t, td)
	if len(cs) != 1 || cs[0].ID != b.ID {
		t.Fatalf("containers after the fence: %+v, want only %s", cs, b.ID)
	}
	st := td.cluster.Store()
	if _, ok := st.Get("test-node", records.NumberKey(testApp, "web", a.Number)); ok {
		t.Error("the fenced container's number is still claimed")
	}
	if _, ok := st.Get("test-node", records.ContainerKey(testPN, netip.MustParseAddr(b.IP))); !ok {
		t.Error("the other container's claim went too")
	}
	ports := td.ports.all()
	if len(ports) != 2 || !ports[0].Closed() || ports[1].Closed() {
		t.Fatalf("ports after the fence: %d, want the first closed and the second open", len(ports))
	}
}
