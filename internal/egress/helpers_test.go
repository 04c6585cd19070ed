package egress

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/cluster/memnet"
	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/poll"
	"github.com/vrouter/vrouter/internal/records"
	"github.com/vrouter/vrouter/router"
)

func errCode(err error) control.Code {
	var ce *control.Error
	if errors.As(err, &ce) {
		return ce.Code
	}
	return ""
}

// Test nodes: a gossip node on an in-memory network, the Service built
// on it from fakes of the router and the registry, and the reconcile loop
// that the daemon would run.

var (
	testNet memnet.Network
	testKey = bytes.Repeat([]byte{0x42}, cluster.KeySize)
)

// fakeDatapath records what the path configures in the router.
type fakeDatapath struct {
	mu      sync.Mutex
	remotes map[uint32]map[netip.Addr]netip.Addr // vni → addr → node
	locals  map[uint32]router.Local
	returns map[uint32][]netip.Addr
}

func newFakeDatapath() *fakeDatapath {
	return &fakeDatapath{remotes: make(map[uint32]map[netip.Addr]netip.Addr), locals: make(map[uint32]router.Local), returns: make(map[uint32][]netip.Addr)}
}

func (f *fakeDatapath) SetRemote(vni uint32, _ string, addr, node netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.remotes[vni] == nil {
		f.remotes[vni] = make(map[netip.Addr]netip.Addr)
	}
	f.remotes[vni][addr] = node
	return nil
}

func (f *fakeDatapath) RemoveRemote(vni uint32, _ string, addr netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.remotes[vni], addr)
	if len(f.remotes[vni]) == 0 {
		delete(f.remotes, vni)
	}
}

func (f *fakeDatapath) SetLocal(vni uint32, _ string, l router.Local, _ router.LocalOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l == nil {
		delete(f.locals, vni)
	} else {
		f.locals[vni] = l
	}
	return nil
}

func (f *fakeDatapath) SetEgressReturn(vni, network uint32, _ string, gws []netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if gws == nil {
		delete(f.returns, vni)
	} else {
		f.returns[vni] = slices.Clone(gws)
	}
	return nil
}

func (f *fakeDatapath) ProbeOverlay([]netip.Addr) {}

// OverlaySeen: every gateway answers.
func (f *fakeDatapath) OverlaySeen(netip.Addr) time.Time { return time.Now() }

// fakePort records the egress route of one container.
type fakePort struct {
	mu    sync.Mutex
	route *router.EgressRoute
}

func (p *fakePort) SetEgress(r *router.EgressRoute) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.route = r
	return nil
}

func (p *fakePort) vni() uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.route == nil {
		return 0
	}
	return p.route.VNI
}

// fakeApps is a registry of local containers.
type fakeApps struct {
	mu sync.Mutex
	cs map[string]Local // by id
}

func (f *fakeApps) Apps() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.cs {
		if !slices.Contains(out, c.App) {
			out = append(out, c.App)
		}
	}
	return out
}

func (f *fakeApps) AppNets() []AppNet {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []AppNet
	for _, c := range f.cs {
		if an := (AppNet{c.App, c.Network}); !slices.Contains(out, an) {
			out = append(out, an)
		}
	}
	return out
}

// NetworkVNI gives a network with local containers its hash VNI: the
// fake has no claims.
func (f *fakeApps) NetworkVNI(pn string) (uint32, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.cs {
		if c.Network == pn {
			return records.VNI(pn), true
		}
	}
	return 0, false
}

func (f *fakeApps) Containers(apps []string) []Local {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Local
	for _, c := range f.cs {
		if slices.Contains(apps, c.App) {
			out = append(out, c)
		}
	}
	return out
}

// fakeNAT counts the NATs open.
type fakeNAT struct {
	open   *atomic.Int64
	closed atomic.Bool
}

func (n *fakeNAT) Deliver([]byte) {}
func (n *fakeNAT) Close() error {
	if n.closed.CompareAndSwap(false, true) {
		n.open.Add(-1)
	}
	return nil
}

type testNode struct {
	name string
	cl   *cluster.Cluster
	svc  *Service
	dp   *fakeDatapath
	apps *fakeApps
	view *records.ContainerView
	nats atomic.Int64 // open
}

// startNode starts a node whose cleanup stops it; edit may set Deps'
// gateway fields (IPs, Probe, StateDir, OpTimeout).
func startNode(t *testing.T, name string, seed *testNode, edit func(*Deps)) *testNode {
	t.Helper()
	n := &testNode{name: name, dp: newFakeDatapath(), apps: &fakeApps{cs: make(map[string]Local)}}
	d := Deps{Self: name, StateDir: t.TempDir()}
	if edit != nil {
		edit(&d)
	}
	cl, err := cluster.New(cluster.Config{
		Name: name, BindAddr: "127.0.0.1", Key: testKey, Timing: cluster.TimingFast, Network: &testNet,
		Meta: cluster.NodeMeta{Overlay: records.OverlayAddr(name), Gateway: len(d.IPs) > 0, EgressIPs: d.IPs},
	})
	if err != nil {
		t.Fatalf("cluster %s: %v", name, err)
	}
	n.cl = cl
	n.view = records.NewContainerView(name, cl.Store())
	d.Members, d.Store, d.Datapath, d.Apps, d.View = cl, cl.Store(), n.dp, n.apps, n.view
	d.NewNAT = func(uint32, netip.Addr) (NAT, error) {
		n.nats.Add(1)
		return &fakeNAT{open: &n.nats}, nil
	}
	n.svc, err = New(d)
	if err != nil {
		cl.Close()
		t.Fatal(err)
	}
	n.svc.Start()
	ctx, cancel := context.WithCancel(context.Background())
	var loop sync.WaitGroup
	loop.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			n.view.Sync()
			n.svc.Reconcile()
			select {
			case <-ctx.Done():
				return
			case <-cl.Changes():
			case <-tick.C:
			}
		}
	})
	t.Cleanup(func() {
		cancel()
		loop.Wait()
		n.svc.Close()
		if err := cl.Close(); err != nil {
			t.Errorf("close %s: %v", name, err)
		}
	})
	if seed != nil {
		jctx, jcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer jcancel()
		if err := cl.Join(jctx, []string{seed.cl.LocalAddr().String()}); err != nil {
			t.Fatalf("%s joins %s: %v", name, seed.name, err)
		}
	}
	return n
}

func aliveCount(n *testNode) int {
	c := 0
	for _, m := range n.cl.Nodes() {
		if m.State == cluster.StateAlive {
			c++
		}
	}
	return c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 10*time.Second, what, cond)
}

// startTrio starts two gateways (g1: 127.0.0.2, 127.0.0.3; g2: 127.0.0.4,
// 127.0.0.5) and a worker w, all alive everywhere.
func startTrio(t *testing.T) (g1, g2, w *testNode) {
	t.Helper()
	g1 = startNode(t, "g1", nil, func(d *Deps) { d.IPs = mustAddrs("127.0.0.2", "127.0.0.3") })
	g2 = startNode(t, "g2", g1, func(d *Deps) { d.IPs = mustAddrs("127.0.0.4", "127.0.0.5") })
	w = startNode(t, "w", g1, nil)
	waitFor(t, "three alive nodes everywhere", func() bool { return aliveCount(g1) == 3 && aliveCount(g2) == 3 && aliveCount(w) == 3 })
	return g1, g2, w
}

// enable enables app from n, retrying for a while on "unavailable": with
// the fast timings a loaded machine can make a gateway suspect for a
// moment, and enable rightly refuses a suspect one.
func (n *testNode) enable(t *testing.T, app string) control.EgressApp {
	t.Helper()
	var row control.EgressApp
	poll.UntilNil(t, 5*time.Second, "enable "+app, func() error {
		r, err := n.svc.Assigner.Enable(context.Background(), app)
		if err != nil && errCode(err) != control.CodeUnavailable {
			t.Fatalf("enable %s on %s: %v", app, n.name, err)
		}
		if err == nil {
			row = r.(control.EgressApp)
		}
		return err
	})
	return row
}

// attach announces a container of n, as the daemon's attach does: its
// record in the store, its port in the registry, its route at once.
func (n *testNode) attach(t *testing.T, id, app, pn, ip string) Local {
	t.Helper()
	addr := netip.MustParseAddr(ip)
	b, err := records.Container{ID: id, App: app, Type: "web", Number: 1}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	n.cl.Store().Put(records.ContainerKey(pn, addr), b)
	c := Local{ID: id, App: app, Network: pn, Port: &fakePort{}}
	n.apps.mu.Lock()
	n.apps.cs[id] = c
	n.apps.mu.Unlock()
	n.view.Sync()
	n.svc.Path.Reconcile(c)
	return c
}

func (n *testNode) detach(c Local, ip string) {
	n.apps.mu.Lock()
	delete(n.apps.cs, c.ID)
	n.apps.mu.Unlock()
	n.cl.Store().Delete(records.ContainerKey(c.Network, netip.MustParseAddr(ip)))
}
