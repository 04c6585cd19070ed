package router

import (
	"bytes"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/vrouter/vrouter/internal/offload"
	"github.com/vrouter/vrouter/internal/offload/offloadtest"
)

// gsoBufs places packets with their virtio-net headers at Headroom of
// fresh buffers, as a GSO Local hands them to WriteLocalGSO.
func gsoBufs(pkts ...vnetPkt) [][]byte {
	out := make([][]byte, len(pkts))
	for i, p := range pkts {
		b := make([]byte, Headroom, Headroom+len(p.pkt))
		copy(b[Headroom-VirtioHdrLen:], p.hdr[:])
		out[i] = append(b, p.pkt...)
	}
	return out
}

func partialVnet(src, dst string, seq uint32, payload int) vnetPkt {
	h, p := offloadtest.Partial(offloadtest.TCP{Src: src, Dst: dst, Seq: seq, Payload: payload})
	return vnetPkt{h, p}
}

func allWrites(p *fakePort) [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	var got [][]byte
	for _, w := range p.writes {
		got = append(got, w...)
	}
	return got
}

func TestWriteLocalGSOWholeToOffloadPort(t *testing.T) {
	r := newInternalRouter(t)
	dst := newFakeOffloadPort()
	attachNoLoop(t, r, dst, 1, "10.240.0.2", 1390)
	sp := super("169.254.20.10", "10.240.0.2", 1000, 60000, 1338)
	cs := partialVnet("169.254.20.10", "10.240.0.2", 61000, 100)
	udp := UDP4("169.254.20.10", "10.240.0.2")
	r.WriteLocalGSO(1, gsoBufs(sp, cs, plainVnet(udp)), Headroom)

	if len(dst.gsoWrites) != 3 || len(dst.writes) != 0 {
		t.Fatalf("%d packets through WriteGSO and %d Write calls, want 3 and 0", len(dst.gsoWrites), len(dst.writes))
	}
	for i, want := range []vnetPkt{sp, cs, plainVnet(udp)} {
		got := dst.gsoWrites[i]
		if !bytes.Equal(got[:VirtioHdrLen], want.hdr[:]) || !bytes.Equal(got[VirtioHdrLen:], want.pkt) {
			t.Errorf("packet %d not passed through whole with its header", i)
		}
	}
	wantBytes := uint64(len(sp.pkt) + len(cs.pkt) + len(udp))
	if c := localOf(r); c != (localCount{3, wantBytes, 0}) {
		t.Errorf("local counters %+v, want 3 packets, %d bytes", c, wantBytes)
	}
}

func TestWriteLocalGSOSegments(t *testing.T) {
	for _, tc := range []struct {
		name    string
		offload bool
		mtu     int
	}{
		{"plain port", false, 1390},
		{"offload port with a small MTU", true, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newInternalRouter(t)
			var fp *fakePort
			var port Port
			var gp *recordingGSOPort
			if tc.offload {
				gp = &recordingGSOPort{fakeOffloadPort: newFakeOffloadPort()}
				fp, port = gp.fakePort, gp
			} else {
				fp = newFakePort(128, true)
				port = fp
			}
			attachNoLoop(t, r, port, 1, "10.240.0.2", tc.mtu)
			// Two super-packets: more segments than one round of scratch
			// buffers, so the split runs in rounds and keeps the order.
			// Segments too large for the port's MTU are cut to it.
			bufs := gsoBufs(
				super("169.254.20.10", "10.240.0.2", 0, 60000, 1338),
				super("169.254.20.10", "10.240.0.2", 60000, 60000, 1338),
				partialVnet("169.254.20.10", "10.240.0.2", 120000, 500),
			)
			mss := min(1338, tc.mtu-40)
			r.WriteLocalGSO(1, bufs, Headroom)
			got := allWrites(fp)
			if n := segmentsOf(t, got, 0, mss); n != 120500 {
				t.Errorf("segments carry %d bytes, want 120500", n)
			}
			want := 2*((60000+mss-1)/mss) + 1
			if len(got) != want {
				t.Errorf("%d packets, want %d", len(got), want)
			}
			if gp != nil && gp.gso.Load() != 0 {
				t.Errorf("%d packets written with a GSO header", gp.gso.Load())
			}
			for i, p := range got {
				if len(p) > tc.mtu {
					t.Fatalf("packet %d: %d bytes > MTU %d", i, len(p), tc.mtu)
				}
			}
			if c := localOf(r); c.packets != uint64(want) || c.dropped != 0 {
				t.Errorf("local counters %+v, want %d packets", c, want)
			}
		})
	}
}

// recordingGSOPort is an OffloadPort whose WriteGSO records like Write,
// completing checksums as the receiving kernel would, and counts packets
// written with a GSO header (none expected: segments).
type recordingGSOPort struct {
	*fakeOffloadPort
	gso atomic.Int64
}

func (p *recordingGSOPort) WriteGSO(bufs [][]byte, offset int) (int, error) {
	call := make([][]byte, len(bufs))
	for i, b := range bufs {
		h := offload.Decode(b[offset-VirtioHdrLen:])
		if h.GSO() != offload.GSONone {
			p.gso.Add(1)
		}
		call[i] = bytes.Clone(b[offset:])
		if h.Flags&offload.NeedsCsum != 0 {
			offload.CompleteChecksum(call[i], h)
		}
	}
	p.mu.Lock()
	p.writes = append(p.writes, call)
	p.mu.Unlock()
	return len(bufs), nil
}

func TestWriteLocalGSOToOverlay(t *testing.T) {
	n := newOverlayNode(t, testNodeA)
	attachNoLoop(t, n.r, newFakePort(128, false), 7, "10.240.0.1", 1390)
	n.setRemote(t, 7, "10.240.0.2", testNodeB)
	n.r.WriteLocalGSO(7, gsoBufs(
		super("169.254.20.10", "10.240.0.2", 0, 20000, 1338),
		partialVnet("169.254.20.10", "10.240.0.2", 20000, 100),
	), Headroom)
	want := uint64(20000/1338 + 1 + 1)
	if c := localOf(n.r); c.packets != want || c.dropped != 0 {
		t.Fatalf("local %+v; want %d packets (one per segment)", c, want)
	}
	frames := readFrames(t, n.o)
	if len(frames) != int(want) {
		t.Fatalf("%d frames, want %d", len(frames), want)
	}
	for i, f := range frames {
		v, ok := decodeVXLAN(f[wgOffset:])
		if !ok || v.vni != 7 || !offloadtest.Valid(v.inner) {
			t.Fatalf("frame %d: invalid inner packet", i)
		}
	}
}

func TestWriteLocalGSODrops(t *testing.T) {
	r := newInternalRouter(t)
	dst := newFakePort(128, true)
	attachNoLoop(t, r, dst, 1, "10.240.0.2", 1390)
	udp := vnetPkt{pkt: UDP4("169.254.20.10", "10.240.0.2")}
	udpGSO := udp
	udpGSO.hdr[1] = 5 // GSO_UDP_L4: not ours
	noSize := super("169.254.20.10", "10.240.0.2", 0, 3000, 0)
	gone := super("169.254.20.10", "10.240.0.9", 0, 3000, 1338)
	bad := super("169.254.20.10", "10.240.0.2", 0, 3000, 1338)
	bad.pkt = bad.pkt[:30] // shorter than its total length
	r.WriteLocalGSO(1, gsoBufs(udpGSO, noSize, gone, bad, udp), Headroom)
	r.WriteLocalGSO(1, gsoBufs(udp), VirtioHdrLen) // offset below Headroom
	r.WriteLocalGSO(2, gsoBufs(udp), Headroom)     // no such network
	if c := localOf(r); c.dropped != 6 || c.packets != 1 {
		t.Errorf("local counters %+v, want 6 dropped and 1 written", c)
	}
}

func TestWriteLocalGSOAllocs(t *testing.T) {
	r := newInternalRouter(t)
	attachNoLoop(t, r, newFakePort(128, false), 1, "10.240.0.2", 1390)
	attachNoLoop(t, r, &countingOffloadPort{fakePort: newFakePort(offloadBatch, false)}, 1, "10.240.0.3", 1390)
	bufs := gsoBufs(
		super("169.254.20.10", "10.240.0.2", 0, 60000, 1338), // split
		super("169.254.20.10", "10.240.0.3", 0, 60000, 1338), // whole
		plainVnet(UDP4("169.254.20.10", "10.240.0.2")),
	)
	r.WriteLocalGSO(1, bufs, Headroom) // make the scratch once
	if allocs := testing.AllocsPerRun(100, func() { r.WriteLocalGSO(1, bufs, Headroom) }); allocs != 0 {
		t.Errorf("WriteLocalGSO allocates %v times per call", allocs)
	}
	if c := localOf(r); c.dropped != 0 {
		t.Errorf("local counters %+v", c)
	}
}

// FuzzWriteLocalGSO: whatever the header and packet, WriteLocalGSO never
// panics and accounts for every packet it does not write.
func FuzzWriteLocalGSO(f *testing.F) {
	sp := super("169.254.20.10", "10.240.0.2", 0, 5000, 1338)
	f.Add(sp.hdr[:], sp.pkt)
	cs := partialVnet("169.254.20.10", "10.240.0.3", 0, 100)
	f.Add(cs.hdr[:], cs.pkt)
	f.Add(make([]byte, VirtioHdrLen), UDP4("169.254.20.10", "10.240.0.2"))
	r := New(Config{})
	defer r.Close()
	for _, tc := range []struct {
		p    Port
		addr string
	}{
		{newFakePort(128, false), "10.240.0.2"},
		{&countingOffloadPort{fakePort: newFakePort(offloadBatch, false)}, "10.240.0.3"},
	} {
		a, err := r.attach(tc.p, PortConfig{Network: 1, PN: testPN(1), Addr: netip.MustParseAddr(tc.addr), MTU: 1000, Name: tc.addr})
		if err != nil {
			f.Fatal(err)
		}
		close(a.done)
		defer a.Close()
	}
	f.Fuzz(func(t *testing.T, hdr, pkt []byte) {
		if len(hdr) < VirtioHdrLen {
			return
		}
		b := make([]byte, Headroom+len(pkt))
		copy(b[Headroom-VirtioHdrLen:Headroom], hdr)
		copy(b[Headroom:], pkt)
		r.WriteLocalGSO(1, [][]byte{b}, Headroom)
	})
}

type localCount struct{ packets, bytes, dropped uint64 }

func localOf(r *Router) localCount {
	return localCount{r.local.packets.Load(), r.local.bytes.Load(), r.local.dropped.Load()}
}
