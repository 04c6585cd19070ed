package daemon

import (
	"crypto/rand"
	"fmt"
	"net/netip"
	"testing"

	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/records"
)

func randomTestPN() string {
	var b [16]byte
	rand.Read(b[:])
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	return fmt.Sprintf("pn-%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// remoteApplied returns the remote entry the daemon installed for key.
func (td *testDaemon) remoteApplied(key string) (remoteEntry, bool) {
	td.remotes.mu.Lock()
	defer td.remotes.mu.Unlock()
	return td.remotes.entries.Applied(key)
}

// collidingPNs finds two network ids with one hash VNI (a birthday search
// over a few thousand random ids).
func collidingPNs(t *testing.T) (string, string) {
	t.Helper()
	seen := make(map[uint32]string)
	for range 1 << 20 {
		id := randomTestPN()
		if other, ok := seen[records.VNI(id)]; ok && other != id {
			return other, id
		}
		seen[records.VNI(id)] = id
	}
	t.Fatal("no colliding pair in 2^20 ids")
	return "", ""
}

func (td *testDaemon) networkVNI(pn string) (uint32, bool) {
	td.mu.Lock()
	defer td.mu.Unlock()
	if n := td.reg.networks[pn]; n != nil {
		return n.vni, true
	}
	return 0, false
}

// TestVNIClaimAtAttach: two networks whose hashes collide, attached at
// once on two nodes, get two VNIs before their attaches return; each
// node's table of a VNI is its network's; a node that attaches the second
// network too joins its VNI from the claims and routes to its containers
// on the other node; a failed attach of a new network leaves no table and
// no claim behind; a node's claim goes with its network's last container.
func TestVNIClaimAtAttach(t *testing.T) {
	a, b := startPair(t)
	pnA, pnB := collidingPNs(t)
	type res struct {
		c   control.Container
		err error
	}
	ra, rb := make(chan res, 1), make(chan res, 1)
	go func() {
		c, err := a.attach(t, control.AttachRequest{Network: pnA, App: testApp, Type: "web", IP: "10.240.0.2"})
		ra <- res{c, err}
	}()
	go func() {
		c, err := b.attach(t, control.AttachRequest{Network: pnB, App: testApp, Type: "web", IP: "10.240.0.2"})
		rb <- res{c, err}
	}()
	ca, cb := <-ra, <-rb
	if ca.err != nil || cb.err != nil {
		t.Fatalf("attaches: %v, %v", ca.err, cb.err)
	}
	va, _ := a.networkVNI(pnA)
	vb, _ := b.networkVNI(pnB)
	if va == vb {
		t.Fatalf("two networks got one VNI %d", va)
	}
	if a.router.VNIOwner(va) != pnA || b.router.VNIOwner(vb) != pnB {
		t.Fatalf("tables: a's %d is %q, b's %d is %q", va, a.router.VNIOwner(va), vb, b.router.VNIOwner(vb))
	}
	for _, td := range []*testDaemon{a, b} {
		st := td.cluster.Store()
		waitFor(t, "the claims to agree", func() bool {
			x, okA := records.VNIOf(st, pnA)
			y, okB := records.VNIOf(st, pnB)
			return okA && okB && x == va && y == vb
		})
	}

	// pnB on a as well: the VNI b claimed for it, and b's container as a
	// remote entry in that table.
	if _, err := a.attach(t, control.AttachRequest{Network: pnB, App: testApp, Type: "web", IP: "10.240.0.3"}); err != nil {
		t.Fatal(err)
	}
	if v, _ := a.networkVNI(pnB); v != vb {
		t.Fatalf("a gave pnB VNI %d, the cluster's is %d", v, vb)
	}
	waitFor(t, "b's pnB container in a's table of pnB", func() bool {
		e, ok := a.remoteApplied(records.ContainerKey(pnB, netip.MustParseAddr(cb.c.IP)))
		return ok && e.vni == vb && e.pn == pnB
	})
	if _, ok := a.remoteApplied(records.ContainerKey(pnA, netip.MustParseAddr(ca.c.IP))); ok {
		t.Fatal("a installed its own container as a remote one")
	}

	// A failed attach of a new network on b (an address a holds): no
	// table, no network, no claim stays.
	pnC := randomTestPN()
	if _, err := a.attach(t, control.AttachRequest{Network: pnC, App: testApp, Type: "web", IP: "10.240.0.7"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a's pnC container on b", func() bool {
		_, ok := b.cluster.Store().Winner(records.ContainerKey(pnC, netip.MustParseAddr("10.240.0.7")))
		return ok
	})
	nets := b.router.Stats().Networks
	if _, err := b.attach(t, control.AttachRequest{Network: pnC, App: testApp, Type: "web", IP: "10.240.0.7"}); errCode(err) != control.CodeConflict {
		t.Fatalf("attach of a taken address: %v, want conflict", err)
	}
	if _, ok := b.networkVNI(pnC); ok || b.router.Stats().Networks != nets {
		t.Fatalf("a failed attach left a network or table behind (%d tables, %d before)", b.router.Stats().Networks, nets)
	}
	if _, ok := b.cluster.Store().Get("node-b", records.VNIKey(records.VNI(pnC))); ok {
		t.Fatal("a failed attach left its VNI claim behind")
	}

	// The last container of pnA leaves a: its table and claim go.
	if err := a.call(t, &control.Request{Op: "detach", Detach: &control.DetachRequest{ID: ca.c.ID}}, false, nil); err != nil {
		t.Fatal(err)
	}
	if a.router.VNIOwner(va) != "" {
		t.Fatalf("pnA's table outlived its last container")
	}
	if _, ok := a.cluster.Store().Get("node-a", records.VNIKey(va)); ok {
		t.Fatal("pnA's VNI claim outlived its last container")
	}
}
