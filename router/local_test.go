package router_test

import (
	"bytes"
	"sync"
	"testing"

	"github.com/vrouter/vrouter/router"
)

// recordLocal is a Local that keeps copies of what it is handed.
type recordLocal struct {
	mu   sync.Mutex
	pkts [][]byte
}

func (l *recordLocal) Deliver(pkt []byte) {
	l.mu.Lock()
	l.pkts = append(l.pkts, bytes.Clone(pkt))
	l.mu.Unlock()
}

func (l *recordLocal) got() [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([][]byte(nil), l.pkts...)
}

// withHeadroom places pkts at offset Headroom of fresh buffers, as a Local
// hands them to WriteLocal.
func withHeadroom(pkts ...[]byte) [][]byte {
	out := make([][]byte, len(pkts))
	for i, p := range pkts {
		out[i] = append(make([]byte, router.Headroom), p...)
	}
	return out
}

func TestLocalDelivery(t *testing.T) {
	r := newTestRouter(t)
	const vni = 7
	_, p1 := addPort(t, r, vni, "10.240.0.1")
	_, p2 := addPort(t, r, vni, "10.240.0.2")
	_, other := addPort(t, r, vni+1, "10.240.0.1")

	// No Local yet: dropped as resolver.
	send(t, p1, router.UDP4("10.240.0.1", "169.254.20.10"))
	if s := router.WaitAccounted(t, r, 1); s.Drops["resolver"] != 1 {
		t.Fatalf("drops %v, want one resolver", s.Drops)
	}

	l := &recordLocal{}
	if err := r.SetLocal(vni, pnOf(vni), l, router.LocalOptions{}); err != nil {
		t.Fatal(err)
	}
	q := router.UDP4("10.240.0.2", "169.254.20.10")
	send(t, p2, q)
	// The other network has no Local: its resolver packets never reach l.
	send(t, other, router.UDP4("10.240.0.1", "169.254.20.10"))
	s := router.WaitAccounted(t, r, 3)
	if s.Counters["to_stack"] != 1 || s.Drops["resolver"] != 2 {
		t.Fatalf("counters %v drops %v, want to_stack 1 and resolver 2", s.Counters, s.Drops)
	}
	if got := l.got(); len(got) != 1 || !bytes.Equal(got[0], q) {
		t.Fatalf("Local got %x, want [%x]", got, q)
	}

	// Back from the stack: two packets for .1, one for .2, one for nobody,
	// one that is not IPv4.
	a1 := router.UDP4("169.254.20.10", "10.240.0.1")
	a2 := router.UDP4("169.254.20.10", "10.240.0.2")
	gone := router.UDP4("169.254.20.10", "10.240.0.9")
	r.WriteLocal(vni, withHeadroom(a1, a1, a2, gone, []byte{0x60, 0, 0}), router.Headroom)
	for i := range 2 {
		if b := recv(t, p1); !bytes.Equal(b, a1) {
			t.Fatalf("p1 packet %d = %x, want %x", i, b, a1)
		}
	}
	if b := recv(t, p2); !bytes.Equal(b, a2) {
		t.Fatalf("p2 got %x, want %x", b, a2)
	}
	expectEmpty(t, other, "the other network's port")
	s = r.Stats()
	if s.Counters["from_stack"] != 3 || s.Counters["from_stack_dropped"] != 2 || s.Counters["from_stack_bytes"] != uint64(2*len(a1)+len(a2)) {
		t.Fatalf("counters %v", s.Counters)
	}
	// A network without ports: everything dropped, nothing panics.
	r.WriteLocal(99, withHeadroom(a1), router.Headroom)
	// A bad offset: dropped.
	r.WriteLocal(vni, withHeadroom(a1), router.Headroom-1)
	if got := r.Stats().Counters["from_stack_dropped"]; got != 4 {
		t.Fatalf("from_stack_dropped = %d, want 4", got)
	}

	// Removing the Local: resolver drops again.
	if err := r.SetLocal(vni, pnOf(vni), nil, router.LocalOptions{}); err != nil {
		t.Fatal(err)
	}
	send(t, p1, q[:0:0]) // an empty read: malformed
	send(t, p1, router.UDP4("10.240.0.1", "169.254.20.10"))
	if s := router.WaitAccounted(t, r, 5); s.Drops["resolver"] != 3 {
		t.Fatalf("drops %v, want three resolver", s.Drops)
	}
	if len(l.got()) != 1 {
		t.Fatal("a removed Local still got packets")
	}
}

// TestLocalKeepsNetwork: a network with a Local and no port is still a
// network; removing the Local forgets it.
func TestLocalKeepsNetwork(t *testing.T) {
	r := newTestRouter(t)
	if err := r.SetLocal(3, pnOf(3), &recordLocal{}, router.LocalOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := r.Stats().Networks; n != 1 {
		t.Fatalf("networks = %d, want 1", n)
	}
	a, _ := addPort(t, r, 3, "10.240.0.1")
	a.Close()
	if n := r.Stats().Networks; n != 1 {
		t.Fatalf("networks after the last port left = %d, want 1 (the Local holds it)", n)
	}
	if err := r.SetLocal(3, pnOf(3), nil, router.LocalOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := r.Stats().Networks; n != 0 {
		t.Fatalf("networks = %d, want 0", n)
	}
	if err := r.SetLocal(1<<24, pnOf(1<<24), &recordLocal{}, router.LocalOptions{}); err == nil {
		t.Fatal("SetLocal accepted a 25-bit VNI")
	}
	r.Close()
	if err := r.SetLocal(3, pnOf(3), &recordLocal{}, router.LocalOptions{}); err == nil {
		t.Fatal("SetLocal after Close succeeded")
	}
}

// TestLocalEgress: packets for outside the network reach the Local only
// when it does egress; broadcasts never do.
func TestLocalEgress(t *testing.T) {
	r := newTestRouter(t)
	_, p := addPort(t, r, 5, "10.240.0.1")
	l := &recordLocal{}
	if err := r.SetLocal(5, pnOf(5), l, router.LocalOptions{}); err != nil {
		t.Fatal(err)
	}
	out := router.UDP4("10.240.0.1", "127.0.0.1")
	send(t, p, out)
	if s := router.WaitAccounted(t, r, 1); s.Drops["outside_network"] != 1 || len(l.got()) != 0 {
		t.Fatalf("without egress: drops %v, local got %d", s.Drops, len(l.got()))
	}
	if err := r.SetLocal(5, pnOf(5), l, router.LocalOptions{Egress: true}); err != nil {
		t.Fatal(err)
	}
	send(t, p, out)
	send(t, p, router.UDP4("10.240.0.1", "255.255.255.255"))
	s := router.WaitAccounted(t, r, 3)
	if got := l.got(); len(got) != 1 || !bytes.Equal(got[0], out) {
		t.Fatalf("with egress: local got %x", got)
	}
	if s.Counters["to_stack"] != 1 || s.Drops["broadcast"] != 1 {
		t.Fatalf("counters %v drops %v", s.Counters, s.Drops)
	}
}
