package daemon

import (
	"fmt"
	"maps"
	"net/netip"
	"testing"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/records"
)

// gatewayReference is what a gateway's NATs should hold, computed the way
// reconcileEgressPath did before it followed the journal: from every
// remote container of the cluster.
func gatewayReference(d *Daemon) map[gwKey]map[netip.Addr][4]byte {
	held := d.localEgress()
	overlays := make(map[string][4]byte)
	for _, n := range d.cluster.Nodes() {
		if (n.State == cluster.StateAlive || n.State == cluster.StateSuspect) && n.Meta.Overlay.IsValid() {
			overlays[n.Name] = n.Meta.Overlay.As4()
		}
	}
	want := make(map[gwKey]map[netip.Addr][4]byte)
	for _, c := range d.remoteContainers() {
		ip, ok := held[c.App]
		node, live := overlays[c.Node]
		if !ok || !live {
			continue
		}
		k := gwKey{vni: records.EgressVNI(c.App, c.Network), net: records.EgressNet(c.App, c.Network), ip: ip}
		if want[k] == nil {
			want[k] = make(map[netip.Addr][4]byte)
		}
		want[k][netip.MustParseAddr(c.IP)] = node
	}
	return want
}

// gatewayState is what the gateway's NATs hold: the remote entries of each
// running NAT.
func gatewayState(d *Daemon) map[gwKey]map[netip.Addr][4]byte {
	p := d.egress
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[gwKey]map[netip.Addr][4]byte)
	for k := range p.gw.stacks {
		out[k] = maps.Clone(p.gw.remotes[k])
	}
	return out
}

// waitGateways waits until every gateway runs nats NATs holding entries
// remote entries in all, exactly what a full recomputation says.
func waitGateways(t *testing.T, what string, nats, entries int, gws ...*testDaemon) {
	t.Helper()
	waitFor(t, what, func() bool {
		for _, g := range gws {
			st := gatewayState(g.Daemon)
			n := 0
			for _, m := range st {
				n += len(m)
			}
			if len(st) != nats || n != entries || fmt.Sprint(st) != fmt.Sprint(gatewayReference(g.Daemon)) {
				return false
			}
		}
		return true
	})
}

// egressVNIs returns each local container's egress VNI by IP and network.
func egressVNIs(td *testDaemon) map[string]uint32 {
	td.mu.Lock()
	defer td.mu.Unlock()
	out := make(map[string]uint32)
	for _, c := range td.reg.containers {
		out[c.info.Network+"/"+c.info.IP] = c.attached.EgressVNI()
	}
	return out
}

// TestEgressPathFollowsContainers attaches and detaches containers of an
// app with dedicated egress and of one without, and checks after each step
// that the worker's routes are set at once and that each gateway's NATs
// hold what a full recomputation says, down to closing the NAT of a
// network the app left.
func TestEgressPathFollowsContainers(t *testing.T) {
	g1, g2, w, _ := startEgressTrio(t)
	const plain = "ap-00000000-0000-4000-8000-000000000001"
	w.mustEnable(t, testApp)
	waitFor(t, "the worker to know the app's gateways", func() bool { return len(w.egressTargets(testApp)) == 2 })

	var cs []control.Container
	for _, ar := range []control.AttachRequest{
		{Network: testPN, App: testApp, Type: "web"},
		{Network: testPN, App: testApp, Type: "web"},
		{Network: testPN2, App: testApp, Type: "worker"},
		{Network: testPN, App: plain, Type: "web"},
	} {
		c, err := w.attach(t, ar)
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
		// The route is there when attach returns, not a reconcile later.
		want := uint32(0)
		if c.App == testApp {
			want = records.EgressVNI(testApp, c.Network)
		}
		if got := egressVNIs(w)[c.Network+"/"+c.IP]; got != want {
			t.Fatalf("%s %s: egress VNI %d right after attach, want %d", c.App, c.IP, got, want)
		}
	}
	// Each gateway holds one of the app's IPs: a NAT per network of the app.
	waitGateways(t, "the gateways to NAT the app's containers", 2, 3, g1, g2)

	detach := func(c control.Container) {
		t.Helper()
		if err := w.call(t, &control.Request{Op: "detach", Detach: &control.DetachRequest{ID: c.ID}}, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	detach(cs[0])
	waitGateways(t, "a detached container's entry to go", 2, 2, g1, g2)
	detach(cs[2]) // the app's last container in testPN2
	waitGateways(t, "the NAT of a network the app left to close", 1, 1, g1, g2)

	if _, err := w.egressCall(t, "disable", testApp); err != nil {
		t.Fatal(err)
	}
	waitGateways(t, "the NATs to close after disable", 0, 0, g1, g2)
	waitFor(t, "the worker's routes to go after disable", func() bool {
		for _, v := range egressVNIs(w) {
			if v != 0 {
				return false
			}
		}
		return true
	})
}
