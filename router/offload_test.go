package router

import (
	"testing"

	"github.com/vrouter/vrouter/internal/offload/offloadtest"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// fakeOffloadPort is an OffloadPort double: WriteGSO records the packets
// with their virtio-net headers.
type fakeOffloadPort struct {
	*fakePort
	gsoWrites [][]byte // header + packet, one per packet written by WriteGSO
}

func newFakeOffloadPort() *fakeOffloadPort {
	return &fakeOffloadPort{fakePort: newFakePort(offloadBatch, true)}
}

func (p *fakeOffloadPort) ReadGSO(bufs [][]byte, sizes []int, offset int) (int, error) {
	return p.Read(bufs, sizes, offset)
}

func (p *fakeOffloadPort) WriteGSO(bufs [][]byte, offset int) (int, error) {
	p.mu.Lock()
	for _, b := range bufs {
		p.gsoWrites = append(p.gsoWrites, append([]byte(nil), b[offset-VirtioHdrLen:]...))
	}
	p.mu.Unlock()
	p.count.Add(int64(len(bufs)))
	return len(bufs), nil
}

type vnetPkt struct {
	hdr [VirtioHdrLen]byte
	pkt []byte
}

// loadVnet puts packets with their virtio-net headers into a's test batch,
// as an OffloadPort's ReadGSO would.
func loadVnet(a *Attached, pkts ...vnetPkt) *readBatch {
	b := batchOf(a)
	for i, p := range pkts {
		copy(b.bufs[i][Headroom-VirtioHdrLen:], p.hdr[:])
		b.sizes[i] = copy(b.bufs[i][Headroom:], p.pkt)
	}
	b.n = len(pkts)
	return b
}

func super(src, dst string, seq uint32, payload, mss int) vnetPkt {
	h, p := offloadtest.Super(offloadtest.TCP{Src: src, Dst: dst, Seq: seq, Payload: payload}, mss)
	return vnetPkt{h, p}
}

func plainVnet(p []byte) vnetPkt { return vnetPkt{pkt: p} }

// segmentsOf checks that pkts are valid TCP segments of at most mss payload
// bytes with consecutive sequence numbers from seq, and returns the
// payload bytes they carry.
func segmentsOf(t *testing.T, pkts [][]byte, seq uint32, mss int) int {
	t.Helper()
	total := 0
	for i, p := range pkts {
		if !offloadtest.Valid(p) {
			t.Fatalf("segment %d: invalid packet", i)
		}
		tcp := header.TCP(header.IPv4(p).Payload())
		if tcp.SequenceNumber() != seq+uint32(total) {
			t.Fatalf("segment %d: seq %d, want %d (out of order?)", i, tcp.SequenceNumber(), seq+uint32(total))
		}
		if n := len(tcp.Payload()); n > mss {
			t.Fatalf("segment %d: %d bytes > mss %d", i, n, mss)
		}
		total += len(tcp.Payload())
	}
	return total
}

func TestOffloadWholeBetweenOffloadPorts(t *testing.T) {
	r := newInternalRouter(t)
	a := attachNoLoop(t, r, newFakeOffloadPort(), 1, "10.240.0.1", 1390)
	dst := newFakeOffloadPort()
	attachNoLoop(t, r, dst, 1, "10.240.0.2", 1390)
	sp := super("10.240.0.1", "10.240.0.2", 1000, 60000, 1338)
	hdr, partial := offloadtest.Partial(offloadtest.TCP{Src: "10.240.0.1", Dst: "10.240.0.2", Payload: 500})
	a.forward(loadVnet(a, sp, vnetPkt{hdr, partial}, plainVnet(UDP4("10.240.0.1", "10.240.0.2"))), r.now())

	if len(dst.gsoWrites) != 3 {
		t.Fatalf("%d packets written with WriteGSO, want 3 (plain Writes: %d)", len(dst.gsoWrites), len(dst.writes))
	}
	if got := dst.gsoWrites[0]; string(got[:VirtioHdrLen]) != string(sp.hdr[:]) || string(got[VirtioHdrLen:]) != string(sp.pkt) {
		t.Error("super-packet not passed through whole with its header")
	}
	if got := dst.gsoWrites[1]; string(got[:VirtioHdrLen]) != string(hdr[:]) {
		t.Error("partial-checksum packet lost its header: the receiving kernel would not complete it")
	}
	s := r.Stats()
	if s.Counters["gso_whole"] != 2 || s.Counters["gso_split"] != 0 || s.Counters["forwarded"] != 3 {
		t.Errorf("counters %v", s.Counters)
	}
}

func TestOffloadSplitForPlainPort(t *testing.T) {
	r := newInternalRouter(t)
	a := attachNoLoop(t, r, newFakeOffloadPort(), 1, "10.240.0.1", 1390)
	dst := newFakePort(128, true)
	attachNoLoop(t, r, dst, 1, "10.240.0.2", 1390)
	hdr, partial := offloadtest.Partial(offloadtest.TCP{Src: "10.240.0.1", Dst: "10.240.0.2", Seq: 60000, Payload: 500})
	a.forward(loadVnet(a, super("10.240.0.1", "10.240.0.2", 0, 60000, 1338), vnetPkt{hdr, partial}), r.now())

	var got [][]byte
	for _, w := range dst.writes {
		got = append(got, w...)
	}
	if n := segmentsOf(t, got, 0, 1338); n != 60500 {
		t.Errorf("segments carry %d bytes, want 60500", n)
	}
	if want := 60000/1338 + 1 + 1; len(got) != want {
		t.Errorf("%d packets, want %d", len(got), want)
	}
	s := r.Stats()
	if s.Counters["gso_split"] != 1 || s.Counters["gso_segments"] != uint64(60000/1338+1) || s.Counters["rx_packets"] != 2 {
		t.Errorf("counters %v", s.Counters)
	}
}

// TestOffloadSplitKeepsOrder: more segments than a batch routes at once
// (16 super-packets of 45 segments) arrive complete and in order.
func TestOffloadSplitKeepsOrder(t *testing.T) {
	r := newInternalRouter(t)
	a := attachNoLoop(t, r, newFakeOffloadPort(), 1, "10.240.0.1", 1390)
	dst := newFakePort(128, true)
	attachNoLoop(t, r, dst, 1, "10.240.0.2", 1390)
	var in []vnetPkt
	seq := uint32(0)
	for i := range offloadBatch {
		flow := offloadtest.TCP{Src: "10.240.0.1", Dst: "10.240.0.2", Seq: seq, Payload: 60000}
		if i%5 == 4 {
			// A small packet of the flow between super-packets must not
			// overtake the segments before it.
			flow.Payload = 700
			in = append(in, plainVnet(offloadtest.Packet(flow)))
		} else {
			h, p := offloadtest.Super(flow, 1338)
			in = append(in, vnetPkt{h, p})
		}
		seq += uint32(flow.Payload)
	}
	a.forward(loadVnet(a, in...), r.now())
	var got [][]byte
	for _, w := range dst.writes {
		got = append(got, w...)
	}
	if n := segmentsOf(t, got, 0, 1338); n != int(seq) {
		t.Errorf("segments carry %d bytes, want %d", n, seq)
	}
	if len(dst.writes) < 2 {
		t.Errorf("%d writes: expected the batch to be routed in several rounds", len(dst.writes))
	}
}

func TestOffloadSuperPacketChecks(t *testing.T) {
	r := newInternalRouter(t)
	a := attachNoLoop(t, r, newFakeOffloadPort(), 1, "10.240.0.1", 1390)
	whole := newFakeOffloadPort()
	attachNoLoop(t, r, whole, 1, "10.240.0.2", 1390)
	small := newFakeOffloadPort()
	attachNoLoop(t, r, small, 1, "10.240.0.3", 576)

	spoofed := super("10.240.0.9", "10.240.0.2", 0, 30000, 1338)
	tooBig := super("10.240.0.1", "10.240.0.3", 0, 30000, 1338) // segments of 1378 > 576
	udpGSO := super("10.240.0.1", "10.240.0.9", 0, 30000, 1338)
	udpGSO.hdr[1] = 5 // USO: not enabled on our TUNs
	a.forward(loadVnet(a, spoofed, tooBig, udpGSO), r.now())
	if len(whole.gsoWrites) != 0 || len(small.gsoWrites) != 0 || small.count.Load() != 0 {
		t.Errorf("written: %d whole, %d small", len(whole.gsoWrites), small.count.Load())
	}
	s := r.Stats()
	if s.Drops["spoofed_source"] != 1 || s.Drops["too_big"] != 23 || s.Drops["malformed"] != 1 {
		t.Errorf("drops %v", s.Drops)
	}
}

func TestOffloadToOverlaySegments(t *testing.T) {
	n := newOverlayNode(t, testNodeA)
	a := attachNoLoop(t, n.r, newFakeOffloadPort(), 7, "10.240.0.1", 1390)
	n.setRemote(t, 7, "10.240.0.2", testNodeB)
	a.forward(loadVnet(a, super("10.240.0.1", "10.240.0.2", 0, 20000, 1338)), n.r.now())
	if got, want := n.r.Stats().Counters["encapsulated"], uint64(20000/1338+1); got != want {
		t.Errorf("encapsulated %d, want %d (one per segment)", got, want)
	}
}

func TestOffloadForwardAllocs(t *testing.T) {
	r := newInternalRouter(t)
	a := attachNoLoop(t, r, newFakeOffloadPort(), 1, "10.240.0.1", 1390)
	dst := newFakePort(128, false)
	attachNoLoop(t, r, dst, 1, "10.240.0.2", 1390)
	wdst := &countingOffloadPort{fakePort: newFakePort(offloadBatch, false)}
	attachNoLoop(t, r, wdst, 1, "10.240.0.3", 1390)
	b := loadVnet(a,
		super("10.240.0.1", "10.240.0.2", 0, 60000, 1338), // split
		super("10.240.0.1", "10.240.0.3", 0, 60000, 1338), // whole
	)
	a.forward(b, r.now()) // allocate the segment buffers once
	if allocs := testing.AllocsPerRun(50, func() {
		loadVnet(a,
			super("10.240.0.1", "10.240.0.2", 0, 0, 1338), // headers only: cheap to rebuild
			super("10.240.0.1", "10.240.0.3", 0, 0, 1338),
		)
	}); allocs == 0 {
		t.Fatal("the fixture itself should allocate; measuring forward alone")
	}
	if allocs := testing.AllocsPerRun(100, func() { a.forward(b, r.now()) }); allocs != 0 {
		t.Errorf("forward of super-packets allocates %v times per batch", allocs)
	}
	if dst.count.Load() == 0 || wdst.count.Load() == 0 {
		t.Error("nothing written")
	}
}

// countingOffloadPort is an OffloadPort that only counts what it is given.
type countingOffloadPort struct{ *fakePort }

func (p *countingOffloadPort) ReadGSO(bufs [][]byte, sizes []int, offset int) (int, error) {
	return p.Read(bufs, sizes, offset)
}

func (p *countingOffloadPort) WriteGSO(bufs [][]byte, offset int) (int, error) {
	return p.Write(bufs, offset)
}

// BenchmarkForwardGSO: one batch of 64 KiB super-packets, kept whole for an
// OffloadPort or segmented for a plain port (copies and checksums: the
// cost every cross-node or egress super-packet pays).
func BenchmarkForwardGSO(b *testing.B) {
	for _, tc := range []struct {
		name    string
		offload bool
	}{{"whole", true}, {"split", false}} {
		b.Run(tc.name, func(b *testing.B) {
			r := New(Config{})
			b.Cleanup(func() { r.Close() })
			a := attachNoLoop(b, r, newFakeOffloadPort(), 1, "10.240.0.1", 1390)
			var dst Port = newFakePort(128, false)
			if tc.offload {
				dst = &countingOffloadPort{fakePort: newFakePort(offloadBatch, false)}
			}
			attachNoLoop(b, r, dst, 1, "10.240.0.2", 1390)
			var in []vnetPkt
			for range 4 {
				in = append(in, super("10.240.0.1", "10.240.0.2", 0, 64000, 1338))
			}
			batch := loadVnet(a, in...)
			b.SetBytes(4 * 64000)
			b.ReportAllocs()
			for b.Loop() {
				a.forward(batch, r.now())
			}
		})
	}
}

// largeLocal records what it is handed; it takes large packets if large.
type largeLocal struct {
	large bool
	pkts  [][]byte
}

func (l *largeLocal) Deliver(pkt []byte) { l.pkts = append(l.pkts, append([]byte(nil), pkt...)) }
func (l *largeLocal) TakesLarge() bool   { return l.large }

// TestOffloadEgressToLargeLocal: a super-packet for node egress reaches a
// netstack that takes large packets whole, with its checksum completed
// (no device will do it after the router); any other Local gets segments.
func TestOffloadEgressToLargeLocal(t *testing.T) {
	for _, large := range []bool{true, false} {
		r := newInternalRouter(t)
		l := &largeLocal{large: large}
		if err := r.SetLocal(1, testPN(1), l, LocalOptions{Egress: true}); err != nil {
			t.Fatal(err)
		}
		a := attachNoLoop(t, r, newFakeOffloadPort(), 1, "10.240.0.1", 1390)
		a.forward(loadVnet(a, super("10.240.0.1", "127.0.0.1", 7, 30000, 1338)), r.now())
		want := 1
		if !large {
			want = 30000/1338 + 1
		}
		if len(l.pkts) != want {
			t.Fatalf("large=%v: %d packets delivered, want %d", large, len(l.pkts), want)
		}
		if n := segmentsOf(t, l.pkts, 7, map[bool]int{true: 30000, false: 1338}[large]); n != 30000 {
			t.Errorf("large=%v: %d bytes delivered", large, n)
		}
		if s := r.Stats(); s.Counters["to_stack"] != uint64(want) {
			t.Errorf("large=%v: counters %v", large, s.Counters)
		}
	}
}

// TestOffloadPartialChecksumOverMTU: a plain packet with a partial
// checksum (NEEDS_CSUM, no GSO) larger than the destination port's MTU is
// not passed through whole: it is dropped as too big, with the ICMP error
// a DF packet gets, as without offload (AUDIT D13b).
func TestOffloadPartialChecksumOverMTU(t *testing.T) {
	r := newInternalRouter(t)
	src := newFakeOffloadPort()
	a := attachNoLoop(t, r, src, 1, "10.240.0.1", 1390)
	dst := newFakeOffloadPort()
	attachNoLoop(t, r, dst, 1, "10.240.0.2", 1390)
	hdr, big := offloadtest.Partial(offloadtest.TCP{Src: "10.240.0.1", Dst: "10.240.0.2", Payload: 8000})
	hdr2, small := offloadtest.Partial(offloadtest.TCP{Src: "10.240.0.1", Dst: "10.240.0.2", Payload: 500})
	a.forward(loadVnet(a, vnetPkt{hdr, big}, vnetPkt{hdr2, small}), r.now())

	if len(dst.gsoWrites) != 1 || len(dst.writes) != 0 {
		t.Fatalf("%d packets passed whole, %d plain, want only the small one whole", len(dst.gsoWrites), len(dst.writes))
	}
	if got := dst.gsoWrites[0]; len(got)-VirtioHdrLen != len(small) {
		t.Fatalf("passed a %d-byte packet, want the %d-byte one", len(got)-VirtioHdrLen, len(small))
	}
	if s := r.Stats(); s.Drops["too_big"] != 1 || s.Counters["gso_whole"] != 1 {
		t.Fatalf("drops %v counters %v", s.Drops, s.Counters)
	}
}

// FuzzForwardOffload drives the forward path of an offload port (virtio-net
// header from the container's kernel: keepsWhole, split, CompleteChecksum)
// with any header and packet: it never panics, counts every packet read,
// and a plain port only ever gets packets that fit its MTU.
func FuzzForwardOffload(f *testing.F) {
	sp := super("10.240.0.1", "10.240.0.2", 1000, 60000, 1338)
	f.Add(sp.hdr[:], sp.pkt)
	sp3 := super("10.240.0.1", "10.240.0.3", 7, 9000, 536)
	f.Add(sp3.hdr[:], sp3.pkt)
	hdr, partial := offloadtest.Partial(offloadtest.TCP{Src: "10.240.0.1", Dst: "10.240.0.4", Payload: 500})
	f.Add(hdr[:], partial)
	hdr, big := offloadtest.Partial(offloadtest.TCP{Src: "10.240.0.1", Dst: "10.240.0.2", Payload: 8000})
	f.Add(hdr[:], big)
	f.Add(make([]byte, VirtioHdrLen), UDP4("10.240.0.1", "10.240.0.3"))

	r := New(Config{})
	a := attachNoLoop(f, r, newFakeOffloadPort(), 1, "10.240.0.1", 1390)
	attachNoLoop(f, r, newFakeOffloadPort(), 1, "10.240.0.2", 1390)
	plain := newFakePort(128, true)
	attachNoLoop(f, r, plain, 1, "10.240.0.3", 576)
	attachNoLoop(f, r, newFakeOffloadPort(), 1, "10.240.0.4", 576)
	f.Cleanup(func() { r.Close() })
	f.Fuzz(func(t *testing.T, hdr, pkt []byte) {
		var p vnetPkt
		copy(p.hdr[:], hdr)
		if len(pkt) > len(batchOf(a).bufs[0])-Headroom {
			pkt = pkt[:len(batchOf(a).bufs[0])-Headroom]
		}
		p.pkt = pkt
		before := r.Stats().Counters["rx_packets"]
		a.forward(loadVnet(a, p, p), r.now())
		if rx := r.Stats().Counters["rx_packets"] - before; rx != 2 {
			t.Fatalf("rx_packets moved by %d, want 2", rx)
		}
		plain.mu.Lock()
		defer plain.mu.Unlock()
		for _, call := range plain.writes {
			for _, w := range call {
				if len(w) > 576 {
					t.Fatalf("a %d-byte packet written to a port of MTU 576", len(w))
				}
			}
		}
		plain.writes = plain.writes[:0]
	})
}
