package daemon

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/keys"
	"github.com/vrouter/vrouter/internal/records"
)

// startEgressTrio starts two gateways (g1: 127.0.0.2, 127.0.0.3; g2:
// 127.0.0.4, 127.0.0.5) and a worker w, all alive everywhere. g1 carries the
// leak check, so it must be started first and closed last.
func startEgressTrio(t *testing.T) (g1, g2, w *testDaemon, keyFile string) {
	t.Helper()
	keyFile = filepath.Join(t.TempDir(), "cluster.key")
	k, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, []byte(keys.Encode(k)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	g1 = startDaemonWith(t, func(c *Config) {
		c.Name, c.ClusterKeyFile, c.Timing = "g1", keyFile, cluster.TimingFast
		c.EgressIPs = mustAddrs("127.0.0.2", "127.0.0.3")
	})
	seed := []string{g1.cluster.LocalAddr().String()}
	g2 = startDaemonNoLeakCheck(t, func(c *Config) {
		c.Name, c.ClusterKeyFile, c.Timing, c.Join = "g2", keyFile, cluster.TimingFast, seed
		c.EgressIPs = mustAddrs("127.0.0.4", "127.0.0.5")
	})
	w = startDaemonNoLeakCheck(t, func(c *Config) {
		c.Name, c.ClusterKeyFile, c.Timing, c.Join = "w", keyFile, cluster.TimingFast, seed
	})
	waitFor(t, "three alive nodes everywhere", func() bool { return alive(g1) == 3 && alive(g2) == 3 && alive(w) == 3 })
	return g1, g2, w, keyFile
}

func (td *testDaemon) egressCall(t *testing.T, action, app string) (control.EgressApp, error) {
	t.Helper()
	var r control.EgressApp
	err := td.call(t, &control.Request{Op: "egress", Egress: &control.EgressRequest{Action: action, App: app}}, false, &r)
	return r, err
}

func (td *testDaemon) mustEnable(t *testing.T, app string) control.EgressApp {
	t.Helper()
	r, err := td.enableRetry(t, app)
	if err != nil {
		t.Fatalf("enable %s on %s: %v", app, td.cfg.Name, err)
	}
	return r
}

// enableRetry enables app, retrying for a while on "unavailable": with the
// fast timings a loaded machine (the race detector, parallel packages) can
// make a gateway suspect for a moment, and enable rightly refuses a
// suspect one. Safe to call from any goroutine.
func (td *testDaemon) enableRetry(t *testing.T, app string) (control.EgressApp, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err := td.egressCall(t, "enable", app)
		if err == nil || errCode(err) != control.CodeUnavailable || time.Now().After(deadline) {
			return r, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// showRows returns the node's show listing as app → rowString.
func (td *testDaemon) showRows(t *testing.T) map[string]string {
	t.Helper()
	var rows []control.EgressApp
	if err := td.call(t, &control.Request{Op: "egress", Egress: &control.EgressRequest{Action: "show"}}, false, &rows); err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string)
	for _, r := range rows {
		out[r.App] = rowString(r)
	}
	return out
}

func (td *testDaemon) gatewayCall(t *testing.T, action string) (control.GatewayState, error) {
	t.Helper()
	var st control.GatewayState
	err := td.call(t, &control.Request{Op: "gateway", Gateway: &control.GatewayRequest{Action: action}}, false, &st)
	return st, err
}

// gatewaysOf checks that r holds two IPs on two different gateways, each
// IP one of its gateway's, and returns "IP@GATEWAY" primary first.
func gatewaysOf(t *testing.T, r control.EgressApp) []string {
	t.Helper()
	own := map[string][]string{"g1": {"127.0.0.2", "127.0.0.3"}, "g2": {"127.0.0.4", "127.0.0.5"}}
	if len(r.IPs) != 2 || r.IPs[0].Gateway == r.IPs[1].Gateway || !r.IPs[0].Primary || r.IPs[1].Primary {
		t.Fatalf("%s: %+v, want two IPs on two gateways, primary first", r.App, r.IPs)
	}
	var out []string
	for _, ip := range r.IPs {
		if !slices.Contains(own[ip.Gateway], ip.IP) {
			t.Fatalf("%s: IP %s is not one of gateway %s", r.App, ip.IP, ip.Gateway)
		}
		out = append(out, ip.IP+"@"+ip.Gateway)
	}
	return out
}

// waitShow waits until every node shows want for app ("" = no row).
func waitShow(t *testing.T, what, app, want string, nodes ...*testDaemon) {
	t.Helper()
	waitFor(t, what, func() bool {
		for _, td := range nodes {
			if td.showRows(t)[app] != want {
				return false
			}
		}
		return true
	})
}

func noRequestsLeft(t *testing.T, nodes ...*testDaemon) {
	t.Helper()
	waitFor(t, "no egress request records left", func() bool {
		for _, td := range nodes {
			if len(td.cluster.Store().List(records.EgressRequestPrefix)) != 0 {
				return false
			}
		}
		return true
	})
}

// TestEgressAssignments runs the control plane of dedicated egress on two
// gateways and a worker: enable, show everywhere, idempotent re-enable,
// exhaustion, disable, drain and undrain, and a gateway restart that keeps
// its assignments.
func TestEgressAssignments(t *testing.T) {
	g1, g2, w, keyFile := startEgressTrio(t)
	all := []*testDaemon{g1, g2, w}

	// Enable on the worker: the lowest IP of each gateway.
	a := w.mustEnable(t, egressAppA)
	ga := gatewaysOf(t, a)
	if !slices.Contains(ga, "127.0.0.2@g1") || !slices.Contains(ga, "127.0.0.4@g2") {
		t.Fatalf("A got %v, want 127.0.0.2@g1 and 127.0.0.4@g2", ga)
	}
	// Health is gossiped: on a loaded machine a gateway can be suspect for
	// a moment, so wait for the settled row rather than take enable's.
	var rowA string
	waitFor(t, "A's row with both gateways healthy, the primary active", func() bool {
		rowA = w.showRows(t)[egressAppA]
		return strings.Contains(rowA, ":active:primary") && strings.Count(rowA, "healthy") == 2
	})
	waitShow(t, "A's row on every node", egressAppA, rowA, all...)
	// Idempotent, from any node.
	if again := g2.mustEnable(t, egressAppA); rowString(again) != rowA {
		t.Fatalf("re-enable on g2: %s, want %s", rowString(again), rowA)
	}

	// A second app gets the other two IPs.
	b := g1.mustEnable(t, egressAppB)
	gb := gatewaysOf(t, b)
	if !slices.Contains(gb, "127.0.0.3@g1") || !slices.Contains(gb, "127.0.0.5@g2") {
		t.Fatalf("B got %v, want 127.0.0.3@g1 and 127.0.0.5@g2", gb)
	}
	waitShow(t, "B's row on every node", egressAppB, rowString(b), all...)

	// A third: nothing free, nothing assigned.
	_, err := w.egressCall(t, "enable", egressAppC)
	if errCode(err) != "unavailable" || !strings.Contains(err.Error(), "dedicated egress needs two gateways with a free egress IP; found 0") {
		t.Fatalf("enable C: %v, want unavailable", err)
	}
	if _, err := w.egressCall(t, "show", egressAppC); errCode(err) != "not_found" {
		t.Fatalf("show C: %v, want not_found", err)
	}

	// Disable frees B's IPs, and C can have them.
	rel, err := g2.egressCall(t, "disable", egressAppB)
	if err != nil || len(rel.IPs) != 2 {
		t.Fatalf("disable B: %+v, %v", rel, err)
	}
	waitShow(t, "B gone everywhere", egressAppB, "", all...)
	if _, err := w.egressCall(t, "disable", egressAppB); errCode(err) != "not_found" {
		t.Fatalf("disable B again: %v, want not_found", err)
	}
	c := w.mustEnable(t, egressAppC)
	if gc := gatewaysOf(t, c); !slices.Contains(gc, "127.0.0.3@g1") || !slices.Contains(gc, "127.0.0.5@g2") {
		t.Fatalf("C got %v, want B's former IPs", gc)
	}
	noRequestsLeft(t, all...)

	// Drain the gateway of A's primary: its IP says draining everywhere and
	// the standby becomes active; undrain restores the first picture.
	primary, standby := a.IPs[0], a.IPs[1]
	gws := map[string]*testDaemon{"g1": g1, "g2": g2}
	st, err := gws[primary.Gateway].gatewayCall(t, "drain")
	if err != nil || !st.Draining || st.Node != primary.Gateway || len(st.EgressIPs) != 2 {
		t.Fatalf("drain: %+v, %v", st, err)
	}
	if st, err := gws[primary.Gateway].gatewayCall(t, "drain"); err != nil || !st.Draining {
		t.Fatalf("drain again: %+v, %v", st, err)
	}
	drained := primary.IP + "@" + primary.Gateway + ":draining:primary " + standby.IP + "@" + standby.Gateway + ":healthy:active"
	waitShow(t, "A's primary draining everywhere", egressAppA, drained, all...)
	if ts := w.egressTargets(egressAppA); len(ts) != 2 || ts[0].Healthy || !ts[0].Primary || !ts[1].Healthy {
		t.Fatalf("targets while draining: %+v", ts)
	}
	if _, err := w.gatewayCall(t, "drain"); errCode(err) != "invalid" || !strings.Contains(err.Error(), "not a gateway") {
		t.Fatalf("drain on the worker: %v", err)
	}
	if st, err := gws[primary.Gateway].gatewayCall(t, "undrain"); err != nil || st.Draining {
		t.Fatalf("undrain: %+v, %v", st, err)
	}
	waitShow(t, "A back to its primary", egressAppA, rowA, all...)

	// The gateways' data-path view.
	if l := g1.localEgress(); l[egressAppA] != netip.MustParseAddr("127.0.0.2") || l[egressAppC] != netip.MustParseAddr("127.0.0.3") || len(l) != 2 {
		t.Fatalf("g1's local egress %v", l)
	}

	// g1 restarts with its state directory: while it is down its IPs show
	// as dead, and it comes back with the same assignments.
	if st, _ := os.Stat(filepath.Join(g1.cfg.StateDir, "egress.json")); st == nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("g1's egress.json: %v", st)
	}
	rowC := w.showRows(t)[egressAppC]
	if err := g1.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "g1's IPs dead on w", func() bool {
		return strings.Contains(w.showRows(t)[egressAppA], "127.0.0.2@g1:dead")
	})
	dir := g1.cfg.StateDir
	g1b := startDaemonNoLeakCheck(t, func(c *Config) {
		c.Name, c.ClusterKeyFile, c.Timing, c.StateDir = "g1", keyFile, cluster.TimingFast, dir
		c.Join = []string{g2.cluster.LocalAddr().String()}
		c.EgressIPs = mustAddrs("127.0.0.2", "127.0.0.3")
	})
	waitShow(t, "A as before g1's restart", egressAppA, rowA, g1b, g2, w)
	waitShow(t, "C as before g1's restart", egressAppC, rowC, g1b, g2, w)
}

// TestEgressConcurrentEnables enables two apps at once from two nodes,
// several times: they never share an IP and each gets two gateways.
func TestEgressConcurrentEnables(t *testing.T) {
	g1, g2, w, _ := startEgressTrio(t)
	for round := range 3 {
		var wg sync.WaitGroup
		res := make([]control.EgressApp, 2)
		errs := make([]error, 2)
		for i, n := range []*testDaemon{w, g2} {
			app := []string{egressAppA, egressAppB}[i]
			wg.Go(func() { res[i], errs[i] = n.enableRetry(t, app) })
		}
		wg.Wait()
		seen := map[string]string{}
		for i, r := range res {
			if errs[i] != nil {
				t.Fatalf("round %d: enable %d: %v", round, i, errs[i])
			}
			for _, ip := range gatewaysOf(t, r) {
				if other, ok := seen[ip]; ok {
					t.Fatalf("round %d: %s given to %s and %s", round, ip, other, r.App)
				}
				seen[ip] = r.App
			}
		}
		for _, app := range []string{egressAppA, egressAppB} {
			if _, err := g1.egressCall(t, "disable", app); err != nil {
				t.Fatalf("round %d: disable: %v", round, err)
			}
		}
		noRequestsLeft(t, g1, g2, w)
	}
}
