package egress

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/leaktest"
	"github.com/vrouter/vrouter/internal/records"
)

// showRows returns n's show listing as app → rowString.
func showRows(t *testing.T, n *testNode) map[string]string {
	t.Helper()
	res, err := n.svc.Assigner.Show("")
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string)
	for _, r := range res.([]control.EgressApp) {
		out[r.App] = rowString(r)
	}
	return out
}

// TestServiceClose: Close stops both probes and the NATs of a gateway
// that serves containers, leaves no goroutine behind, and a Start after
// Close starts nothing.
func TestServiceClose(t *testing.T) {
	leaktest.Check(t)
	outside, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer outside.Close()
	g1 := startNode(t, "g1", nil, func(d *Deps) {
		d.IPs = mustAddrs("127.0.0.2")
		d.Probe = netip.MustParseAddrPort(outside.Addr().String())
	})
	g2 := startNode(t, "g2", g1, func(d *Deps) { d.IPs = mustAddrs("127.0.0.4") })
	w := startNode(t, "w", g1, nil)
	waitFor(t, "three alive nodes everywhere", func() bool { return aliveCount(g1) == 3 && aliveCount(g2) == 3 && aliveCount(w) == 3 })
	w.enable(t, egressAppA)
	w.attach(t, "c-000000000001", egressAppA, testPN, "10.240.0.1")
	waitFor(t, "g1's NAT", func() bool { return g1.nats.Load() == 1 })

	g1.svc.Close()
	if n := g1.nats.Load(); n != 0 {
		t.Fatalf("%d NATs open after Close", n)
	}
	g1.svc.Close() // idempotent
	g1.svc.Start() // after Close: nothing
	g1.svc.Path.Reconcile()
	if n := g1.nats.Load(); n != 0 {
		t.Fatalf("Reconcile after Close opened %d NATs", n)
	}
	// leaktest, at cleanup: the probes and NAT closers of every service
	// are gone once the nodes are.
}

// TestEnableRollback: a gateway that never answers makes enable fail in
// bounded time, and what the other gateway granted is released again.
func TestEnableRollback(t *testing.T) {
	leaktest.Check(t)
	g1 := startNode(t, "g1", nil, func(d *Deps) { d.IPs = mustAddrs("127.0.0.2") })
	w := startNode(t, "w", g1, func(d *Deps) { d.OpTimeout = time.Second })
	// A gateway in name only: gossip without a Service behind it.
	mute, err := cluster.New(cluster.Config{Name: "mute", BindAddr: "127.0.0.1", Key: testKey, Timing: cluster.TimingFast, Network: &testNet,
		Meta: cluster.NodeMeta{Gateway: true, EgressIPs: mustAddrs("127.0.0.4"), Overlay: records.OverlayAddr("mute")}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mute.Close() })
	if err := mute.Join(context.Background(), []string{g1.cl.LocalAddr().String()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "three alive nodes", func() bool { return aliveCount(g1) == 3 && aliveCount(w) == 3 })

	_, err = w.svc.Assigner.Enable(context.Background(), egressAppA)
	if errCode(err) != "unavailable" || !strings.Contains(err.Error(), "gateway mute did not confirm egress IP 127.0.0.4") {
		t.Fatalf("enable with a mute gateway: %v", err)
	}
	for _, n := range []*testNode{g1, w} {
		if rows := showRows(t, n); len(rows) != 0 {
			t.Fatalf("%s shows %v after the failed enable", n.name, rows)
		}
	}
	waitFor(t, "no egress request records left", func() bool {
		return len(g1.cl.Store().List(records.EgressRequestPrefix)) == 0 && len(w.cl.Store().List(records.EgressRequestPrefix)) == 0
	})
}

// TestRestore: a gateway restores its saved assignments and drain flag at
// start, drops (and stops saving) those of IPs it no longer has, and sets
// an unreadable file aside.
func TestRestore(t *testing.T) {
	leaktest.Check(t)
	state := t.TempDir()
	saved := stateFile{Draining: true, Assignments: []persistedAssignment{
		{IP: netip.MustParseAddr("127.0.0.2"), App: egressAppA, AssignedAt: assignT0},
		{IP: netip.MustParseAddr("127.0.0.3"), App: egressAppB, AssignedAt: assignT0},
	}}
	b, _ := json.Marshal(saved)
	path := filepath.Join(state, fileName)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	g := startNode(t, "test-node", nil, func(d *Deps) {
		d.StateDir = state
		d.IPs = mustAddrs("127.0.0.2") // 127.0.0.3 was removed
	})
	if rows := showRows(t, g); rows[egressAppA] != "127.0.0.2@test-node:draining:primary" || len(rows) != 1 {
		t.Fatalf("show after restore: %v", rows)
	}
	if l := g.svc.Assigner.Local(); len(l) != 1 || l[egressAppA] != netip.MustParseAddr("127.0.0.2") {
		t.Fatalf("local egress after restore: %v", l)
	}
	got, err := readFile(path)
	if err != nil || !got.Draining || len(got.Assignments) != 1 || got.Assignments[0] != saved.Assignments[0] {
		t.Fatalf("saved after restore: %+v, %v", got, err)
	}
	if st, err := g.svc.Assigner.GatewayOp(&control.GatewayRequest{Action: control.GatewayUndrain}); err != nil || st.(control.GatewayState).Draining {
		t.Fatalf("undrain: %+v, %v", st, err)
	}
	if got, _ := readFile(path); got.Draining {
		t.Fatal("undrain not saved")
	}

	// An unreadable file is set aside, not fatal.
	state2 := t.TempDir()
	os.WriteFile(filepath.Join(state2, fileName), []byte("{garbage"), 0o600)
	g2 := startNode(t, "other", nil, func(d *Deps) {
		d.StateDir = state2
		d.IPs = mustAddrs("127.0.0.2")
	})
	if len(g2.svc.Assigner.Local()) != 0 {
		t.Fatalf("assignments from garbage: %v", g2.svc.Assigner.Local())
	}
	if _, err := os.Stat(filepath.Join(state2, fileName+".bad")); err != nil {
		t.Fatalf("garbage not set aside: %v", err)
	}

	// A node that is no longer a gateway drops its file.
	state3 := t.TempDir()
	os.WriteFile(filepath.Join(state3, fileName), b, 0o600)
	startNode(t, "worker", nil, func(d *Deps) { d.StateDir = state3 })
	if _, err := os.Stat(filepath.Join(state3, fileName)); !os.IsNotExist(err) {
		t.Fatalf("a worker kept %s: %v", fileName, err)
	}
}

// TestControlOps: bad egress and gateway requests get the codes the CLI
// shows.
// TestSavedBeforeAnnounced: a gateway that cannot save egress.json does
// not announce the assignment (a crash would lose an IP others saw, AUDIT
// D12); once it can, the file holds the assignment before the record is
// out.
func TestSavedBeforeAnnounced(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	if err := os.WriteFile(state, nil, 0o600); err != nil { // a file: every save fails
		t.Fatal(err)
	}
	g := startNode(t, "gw", nil, func(d *Deps) {
		d.StateDir = state
		d.IPs = mustAddrs("127.0.0.2")
	})
	ip := netip.MustParseAddr("127.0.0.2")
	req, err := records.EgressRequest{Action: records.ActionEnable, ID: "r1", IPs: []records.EgressPick{{IP: ip, Gateway: "gw"}}}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	g.cl.Store().Put(records.EgressRequestKey(egressAppA), req)
	g.svc.Assigner.serveRequests()
	if _, ok := g.cl.Store().Get("gw", records.EIPKey(ip)); ok {
		t.Fatal("the assignment was announced although egress.json could not be written")
	}
	if err := os.Remove(state); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	g.svc.Assigner.serveRequests()
	if _, ok := g.cl.Store().Get("gw", records.EIPKey(ip)); !ok {
		t.Fatal("no assignment once egress.json could be written")
	}
	f, err := readFile(filepath.Join(state, fileName))
	if err != nil || len(f.Assignments) != 1 || f.Assignments[0].IP != ip || f.Assignments[0].App != egressAppA {
		t.Fatalf("egress.json: %+v, %v", f, err)
	}
}

func TestControlOps(t *testing.T) {
	leaktest.Check(t)
	n := startNode(t, "test-node", nil, nil)
	a := n.svc.Assigner
	for _, tc := range []struct {
		action, app string
		code        control.Code
	}{
		{"enable", "", "invalid"},
		{"disable", "", "invalid"},
		{"enable", "ap-1", "invalid"},
		{"show", "ap-1", "invalid"},
		{"frob", egressAppA, "invalid"},
		{"disable", egressAppA, "not_found"},
		{"show", egressAppA, "not_found"},
		{"enable", egressAppA, "unavailable"},
	} {
		if _, err := a.EgressOp(t.Context(), &control.EgressRequest{Action: tc.action, App: tc.app}); errCode(err) != tc.code {
			t.Errorf("egress %s %q: %v, want code %s", tc.action, tc.app, err, tc.code)
		}
	}
	if _, err := a.EgressOp(t.Context(), nil); errCode(err) != control.CodeBadRequest {
		t.Errorf("egress without a body: %v", err)
	}
	if _, err := a.GatewayOp(nil); errCode(err) != control.CodeBadRequest {
		t.Errorf("gateway without a body: %v", err)
	}
	if _, err := a.GatewayOp(&control.GatewayRequest{Action: "drain"}); errCode(err) != "invalid" {
		t.Errorf("drain on a worker: %v, want invalid", err)
	}
	if _, err := a.GatewayOp(&control.GatewayRequest{Action: "maintain"}); errCode(err) != "invalid" {
		t.Errorf("unknown gateway action: %v, want invalid", err)
	}
	if a.Targets(egressAppA) != nil || len(a.Local()) != 0 {
		t.Errorf("a node without assignments has targets or local egress")
	}
	if _, err := New(Deps{Self: "x"}); err == nil {
		t.Error("New accepted missing dependencies")
	}
}
