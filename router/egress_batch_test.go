package router

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// batchLocal is a gateway NAT that records the IPv4 IDs of what it gets,
// one slice per call.
type batchLocal struct {
	calls   [][]uint16
	singles int
	keep    bool // record; a benchmark's only counts
	pkts    int
}

func (l *batchLocal) Deliver(pkt []byte) {
	l.singles++
	l.pkts++
}

func (l *batchLocal) DeliverBatch(pkts [][]byte) {
	l.pkts += len(pkts)
	if !l.keep {
		return
	}
	var ids []uint16
	for _, p := range pkts {
		ids = append(ids, header.IPv4(p).ID())
	}
	l.calls = append(l.calls, ids)
}

// gatewayFixture is a gateway node with the NATs of two egress VNIs (a
// BatchLocal in evni, a plain Local in evni+1) for container 10.240.0.1
// of testNodeA.
func gatewayFixture(tb testing.TB) (*overlayNode, *batchLocal, *countLocal) {
	tb.Helper()
	const evni = EgressVNIBit | 7
	g := newOverlayNode(tb, testNodeB)
	bl, cl := &batchLocal{keep: true}, &countLocal{}
	for vni, l := range map[uint32]Local{evni: bl, evni + 1: cl} {
		g.setRemote(tb, vni, "10.240.0.1", testNodeA)
		if err := g.r.SetLocal(vni, testPN(vni), l, LocalOptions{Egress: true}); err != nil {
			tb.Fatal(err)
		}
	}
	return g, bl, cl
}

// egressFrames returns one decrypted frame per VNI in vnis, each a UDP
// packet from the container to 192.0.2.1 with IPv4 ID i.
func egressFrames(vnis []uint32, size int) [][]byte {
	var frames [][]byte
	for i, vni := range vnis {
		pkt := Pkt4("10.240.0.1", "192.0.2.1", PktOpts{Payload: size - 28, ID: uint16(i)})
		f := VXLANFrame(pkt, netip.AddrFrom4(testNodeA), netip.AddrFrom4(testNodeB), vni, wgOffset)
		frames = append(frames, f)
	}
	return frames
}

// TestGatewayBatchesEgress: the frames of one overlay Write reach a
// BatchLocal NAT in order in one DeliverBatch (a plain Local's packets in
// between go to it at once, with Deliver: the two NATs are independent).
func TestGatewayBatchesEgress(t *testing.T) {
	const evni = EgressVNIBit | 7
	g, bl, cl := gatewayFixture(t)
	vnis := []uint32{evni, evni, evni, evni + 1, evni + 1, evni, evni}
	if _, err := g.o.Write(egressFrames(vnis, 200), wgOffset); err != nil {
		t.Fatal(err)
	}
	if want := [][]uint16{{0, 1, 2, 5, 6}}; !slices.EqualFunc(bl.calls, want, slices.Equal) {
		t.Errorf("BatchLocal got %v, want %v", bl.calls, want)
	}
	if bl.singles != 0 || cl.n != 2 {
		t.Errorf("%d single deliveries to the BatchLocal, %d to the plain Local; want 0 and 2", bl.singles, cl.n)
	}
	if s := g.r.Stats(); s.Counters["to_stack"] != uint64(len(vnis)) {
		t.Errorf("to_stack %d, want %d (%v)", s.Counters["to_stack"], len(vnis), s.Drops)
	}
	// A batch larger than the overlay's: every packet in order still.
	bl.calls = nil
	many := make([]uint32, overlayBatch+5)
	for i := range many {
		many[i] = evni
	}
	g.o.Write(egressFrames(many, 200), wgOffset)
	var got []uint16
	for _, c := range bl.calls {
		got = append(got, c...)
	}
	if len(got) != len(many) || !slices.IsSorted(got) {
		t.Errorf("%d packets in %d calls, in order %v; want %d", len(got), len(bl.calls), slices.IsSorted(got), len(many))
	}
}

// TestGatewayDecapAllocs: the gateway's receive path to its NAT allocates
// nothing per batch.
func TestGatewayDecapAllocs(t *testing.T) {
	g, bl, _ := gatewayFixture(t)
	bl.keep = false
	vnis := make([]uint32, 64)
	for i := range vnis {
		vnis[i] = EgressVNIBit | 7
	}
	frames := egressFrames(vnis, 1390)
	g.o.Write(frames, wgOffset) // warm the scratch pool
	if allocs := testing.AllocsPerRun(100, func() { g.o.Write(frames, wgOffset) }); allocs != 0 {
		t.Errorf("a gateway's batch of 64 allocates %v times", allocs)
	}
	if bl.pkts == 0 {
		t.Error("nothing delivered")
	}
}

// BenchmarkGatewayDecap measures Overlay.Write of decrypted frames at a
// gateway: decode, the source check, and the hand-off of the batch to the
// app's NAT (which discards it here; stack.BenchmarkCoalesce is the NAT's
// share).
func BenchmarkGatewayDecap(b *testing.B) {
	for _, batch := range []int{1, 128} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			const size = 1390
			g, bl, _ := gatewayFixture(b)
			bl.keep = false
			vnis := make([]uint32, batch)
			for i := range vnis {
				vnis[i] = EgressVNIBit | 7
			}
			frames := egressFrames(vnis, size)
			b.SetBytes(int64(batch * size))
			b.ReportAllocs()
			for b.Loop() {
				g.o.Write(frames, wgOffset)
			}
			b.ReportMetric(float64(b.N)*float64(batch)/b.Elapsed().Seconds(), "pkts/s")
		})
	}
}
