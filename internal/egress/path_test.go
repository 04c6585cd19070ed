package egress

import (
	"fmt"
	"maps"
	"net/netip"
	"testing"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/internal/leaktest"
	"github.com/vrouter/vrouter/internal/records"
)

const (
	testPN  = "pn-ad0fd6a1-d05e-40ea-bf63-c4f8a75a9d8c"
	testPN2 = "pn-0b7e3c52-9a41-4d6e-8f10-2c3d4e5f6a7b"
)

// gatewayReference is what a gateway's NATs should hold, computed from
// every remote container of the cluster.
func gatewayReference(n *testNode) map[gwKey]map[netip.Addr][4]byte {
	held := n.svc.Assigner.Local()
	overlays := make(map[string][4]byte)
	for _, m := range n.cl.Nodes() {
		if (m.State == cluster.StateAlive || m.State == cluster.StateSuspect) && m.Meta.Overlay.IsValid() {
			overlays[m.Name] = m.Meta.Overlay.As4()
		}
	}
	want := make(map[gwKey]map[netip.Addr][4]byte)
	for _, c := range n.view.Others() {
		ip, ok := held[c.App]
		node, live := overlays[c.Owner]
		if !ok || !live {
			continue
		}
		k := gwKey{vni: records.EgressVNI(c.App, c.PN), net: records.EgressNet(c.App, c.PN), ip: ip}
		if want[k] == nil {
			want[k] = make(map[netip.Addr][4]byte)
		}
		want[k][c.Addr] = node
	}
	return want
}

// gatewayState is what the gateway's NATs hold: the remote entries of each
// running NAT, checked against the router's.
func gatewayState(t *testing.T, n *testNode) map[gwKey]map[netip.Addr][4]byte {
	p := n.svc.Path
	p.mu.Lock()
	defer p.mu.Unlock()
	n.dp.mu.Lock()
	defer n.dp.mu.Unlock()
	out := make(map[gwKey]map[netip.Addr][4]byte)
	for k, nat := range p.gw.nats {
		out[k] = maps.Clone(p.gw.remotes[k])
		if n.dp.locals[k.vni] != nat {
			t.Errorf("%s: NAT of %v not hooked to the router", n.name, k)
		}
		for addr, node := range p.gw.remotes[k] {
			if n.dp.remotes[k.vni][addr] != netip.AddrFrom4(node) {
				t.Errorf("%s: remote entry %v/%v not in the router", n.name, k.vni, addr)
			}
		}
	}
	return out
}

// waitGateways waits until every gateway runs nats NATs holding entries
// remote entries in all, exactly what a full recomputation says.
func waitGateways(t *testing.T, what string, nats, entries int, gws ...*testNode) {
	t.Helper()
	waitFor(t, what, func() bool {
		for _, g := range gws {
			st := gatewayState(t, g)
			e := 0
			for _, m := range st {
				e += len(m)
			}
			if len(st) != nats || e != entries || g.nats.Load() != int64(nats) || fmt.Sprint(st) != fmt.Sprint(gatewayReference(g)) {
				return false
			}
		}
		return true
	})
}

// TestPathFollowsContainers attaches and detaches containers of an app
// with dedicated egress and of one without, and checks after each step
// that the worker's routes are set at once and that each gateway's NATs
// hold what a full recomputation says, down to closing the NAT of a
// network the app left.
func TestPathFollowsContainers(t *testing.T) {
	leaktest.Check(t)
	g1, g2, w := startTrio(t)
	const plain = "ap-00000000-0000-4000-8000-000000000001"
	w.enable(t, egressAppA)
	waitFor(t, "the worker to know the app's gateways", func() bool { return len(w.svc.Assigner.Targets(egressAppA)) == 2 })

	type att struct {
		c  Local
		ip string
	}
	var cs []att
	for i, c := range []struct{ app, pn, ip string }{
		{egressAppA, testPN, "10.240.0.1"},
		{egressAppA, testPN, "10.240.0.2"},
		{egressAppA, testPN2, "10.240.0.1"},
		{plain, testPN, "10.240.0.3"},
	} {
		l := w.attach(t, fmt.Sprintf("c-00000000000%d", i), c.app, c.pn, c.ip)
		cs = append(cs, att{l, c.ip})
		// The route is there when attach returns, not a reconcile later.
		want := uint32(0)
		if c.app == egressAppA {
			want = records.EgressVNI(egressAppA, c.pn)
		}
		if got := l.Port.(*fakePort).vni(); got != want {
			t.Fatalf("%s %s: egress VNI %d right after attach, want %d", c.app, c.ip, got, want)
		}
	}
	// The worker accepts the gateways' answers in both networks.
	waitFor(t, "the worker's returns", func() bool {
		w.dp.mu.Lock()
		defer w.dp.mu.Unlock()
		return len(w.dp.returns[records.EgressVNI(egressAppA, testPN)]) == 2 && len(w.dp.returns[records.EgressVNI(egressAppA, testPN2)]) == 2
	})
	// Each gateway holds one of the app's IPs: a NAT per network of the app.
	waitGateways(t, "the gateways to NAT the app's containers", 2, 3, g1, g2)

	w.detach(cs[0].c, cs[0].ip)
	waitGateways(t, "a detached container's entry to go", 2, 2, g1, g2)
	w.detach(cs[2].c, cs[2].ip) // the app's last container in testPN2
	waitGateways(t, "the NAT of a network the app left to close", 1, 1, g1, g2)

	if _, err := w.svc.Assigner.Disable(t.Context(), egressAppA); err != nil {
		t.Fatal(err)
	}
	waitGateways(t, "the NATs to close after disable", 0, 0, g1, g2)
	waitFor(t, "the worker's routes and returns to go after disable", func() bool {
		w.svc.Path.Reconcile()
		w.dp.mu.Lock()
		defer w.dp.mu.Unlock()
		return cs[1].c.Port.(*fakePort).vni() == 0 && len(w.dp.returns) == 0
	})
}
