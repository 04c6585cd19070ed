package router

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/leaktest"
	"github.com/vrouter/vrouter/internal/offload"
	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// wgOffset is the offset wireguard-go uses in Read and Write.
const wgOffset = 16

// overlayNode is a router with its overlay and no read goroutines.
type overlayNode struct {
	r  *Router
	o  *Overlay
	ip [4]byte
}

func newOverlayNode(tb testing.TB, ip [4]byte) *overlayNode {
	tb.Helper()
	r := New(Config{})
	tb.Cleanup(func() { r.Close() })
	dev, err := r.EnableOverlay(netip.AddrFrom4(ip))
	if err != nil {
		tb.Fatalf("EnableOverlay: %v", err)
	}
	return &overlayNode{r: r, o: dev.(*Overlay), ip: ip}
}

func (n *overlayNode) setRemote(tb testing.TB, network uint32, addr string, node [4]byte) {
	tb.Helper()
	if err := n.r.SetRemote(network, testPN(network), netip.MustParseAddr(addr), netip.AddrFrom4(node)); err != nil {
		tb.Fatalf("SetRemote(%d, %s): %v", network, addr, err)
	}
}

// wgBufs returns buffers shaped like wireguard-go's.
func wgBufs(n int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, 65535)
	}
	return bufs, make([]int, n)
}

// readFrames drains the overlay as wireguard-go would and returns the
// frames, each at offset wgOffset of its buffer.
func readFrames(t *testing.T, o *Overlay) [][]byte {
	t.Helper()
	bufs, sizes := wgBufs(overlayBatch)
	var frames [][]byte
	for o.q.len() > 0 {
		n, err := o.Read(bufs, sizes, wgOffset)
		if err != nil {
			t.Fatalf("Overlay.Read: %v", err)
		}
		for i := range n {
			frames = append(frames, append([]byte(nil), bufs[i][:wgOffset+sizes[i]]...))
		}
	}
	return frames
}

func TestOverlayPath(t *testing.T) {
	a := newOverlayNode(t, testNodeA)
	b := newOverlayNode(t, testNodeB)
	src := attachNoLoop(t, a.r, newFakePort(8, true), 7, "10.240.0.1", 1390)
	a.setRemote(t, 7, "10.240.0.2", testNodeB)
	dstPort := newFakePort(8, true)
	attachNoLoop(t, b.r, dstPort, 7, "10.240.0.2", 1390)
	b.setRemote(t, 7, "10.240.0.1", testNodeA)

	p1 := UDP4("10.240.0.1", "10.240.0.2")
	p2 := Pkt4("10.240.0.1", "10.240.0.2", PktOpts{Payload: 1000})
	big := Pkt4("10.240.0.1", "10.240.0.2", PktOpts{Payload: 1400, DF: true})
	src.forward(load(src, p1, p2, big), a.r.now())

	frames := readFrames(t, a.o)
	if len(frames) != 2 {
		t.Fatalf("overlay got %d frames, want 2", len(frames))
	}
	f, ok := decodeVXLAN(frames[0][wgOffset:])
	if !ok || f.src != testNodeA || f.dst != testNodeB || f.vni != 7 || string(f.inner) != string(p1) {
		t.Errorf("frame 0 = %+v, %v", f, ok)
	}
	// The oversize DF packet got fragmentation-needed with the overlay MTU.
	src.port.(*fakePort).mu.Lock()
	writes := src.port.(*fakePort).writes
	src.port.(*fakePort).mu.Unlock()
	if len(writes) != 1 || len(writes[0]) != 1 {
		t.Fatalf("sender got %d writes, want one ICMP error", len(writes))
	}
	if ic := header.ICMPv4(writes[0][0][20:]); ic.Code() != header.ICMPv4FragmentationNeeded || ic.MTU() != DefaultMTU {
		t.Errorf("ICMP code %d mtu %d", ic.Code(), ic.MTU())
	}

	if _, err := b.o.Write(frames, wgOffset); err != nil {
		t.Fatalf("Overlay.Write: %v", err)
	}
	if len(dstPort.writes) != 1 || len(dstPort.writes[0]) != 2 ||
		string(dstPort.writes[0][0]) != string(p1) || string(dstPort.writes[0][1]) != string(p2) {
		t.Fatalf("destination got %d writes, want one batch of the 2 packets", len(dstPort.writes))
	}
	sa, sb := a.r.Stats(), b.r.Stats()
	if sa.Counters["encapsulated"] != 2 || sa.Counters["forwarded"] != 2 || sa.Drops["too_big"] != 1 {
		t.Errorf("sender stats %v %v", sa.Counters, sa.Drops)
	}
	if sb.Counters["decapsulated"] != 2 || sb.Counters["rx_packets"] != 2 || sb.Counters["forwarded"] != 2 {
		t.Errorf("receiver stats %v %v", sb.Counters, sb.Drops)
	}
	wantBytes := uint64(len(p1) + len(p2))
	if sa.Counters["encapsulated_bytes"] != wantBytes {
		t.Errorf("encapsulated_bytes %d, want %d", sa.Counters["encapsulated_bytes"], wantBytes)
	}
	// The port's view: both went to another node, none stayed local.
	c := src.Counters()
	if c.OverlayPackets != 2 || c.OverlayBytes != wantBytes || c.LocalPackets != 0 || c.Drops[dropTooBig] != 1 {
		t.Errorf("sender port counters %+v", c)
	}
	if n := a.r.NetworkCounters()[src.cfg.Network]; n.OverlayPackets != 2 || n.RxPackets != c.RxPackets {
		t.Errorf("network counters %+v, want the sender port's", n)
	}
}

func TestOverlayWriteDrops(t *testing.T) {
	b := newOverlayNode(t, testNodeB)
	dst := newFakePort(8, true)
	attachNoLoop(t, b.r, dst, 7, "10.240.0.2", 576)
	attachNoLoop(t, b.r, newFakePort(8, true), 8, "10.240.0.2", 1390)
	b.setRemote(t, 7, "10.240.0.1", testNodeA)
	b.setRemote(t, 7, "10.240.0.5", [4]byte{100, 64, 0, 3}) // a third node's container

	frame := func(pkt []byte, vni uint32, outerDst [4]byte) []byte {
		buf := make([]byte, wgOffset+VXLANOverhead+len(pkt))
		copy(buf[wgOffset+VXLANOverhead:], pkt)
		encodeVXLAN(buf[wgOffset:], testNodeA, outerDst, vni)
		return buf
	}
	malformed := frame(UDP4("10.240.0.1", "10.240.0.2"), 7, testNodeB)
	malformed[wgOffset+offVXLAN] = 0
	tests := []struct {
		name  string
		frame []byte
		drop  string
	}{
		{"malformed", malformed, "vxlan_malformed"},
		{"not for this node", frame(UDP4("10.240.0.1", "10.240.0.2"), 7, [4]byte{100, 64, 0, 9}), "vxlan_malformed"},
		{"unknown VNI", frame(UDP4("10.240.0.1", "10.240.0.2"), 99, testNodeB), "unknown_vni"},
		{"inner not IPv4", frame(append(IPv6Pkt(), make([]byte, 20)...), 7, testNodeB), "not_ipv4"},
		{"source of another node", frame(UDP4("10.240.0.5", "10.240.0.2"), 7, testNodeB), "forged_source"},
		{"source is local", frame(UDP4("10.240.0.2", "10.240.0.2"), 7, testNodeB), "forged_source"},
		{"source unknown", frame(UDP4("10.240.0.9", "10.240.0.2"), 7, testNodeB), "forged_source"},
		{"source outside PN", frame(UDP4("1.2.3.4", "10.240.0.2"), 7, testNodeB), "forged_source"},
		{"source from another PN", frame(UDP4("10.240.0.1", "10.240.0.2"), 8, testNodeB), "forged_source"},
		{"broadcast", frame(UDP4("10.240.0.1", "10.240.3.255"), 7, testNodeB), "broadcast"},
		{"destination remote", frame(UDP4("10.240.0.1", "10.240.0.5"), 7, testNodeB), "unknown_destination"},
		{"destination unknown", frame(UDP4("10.240.0.1", "10.240.0.3"), 7, testNodeB), "unknown_destination"},
		{"destination outside PN", frame(UDP4("10.240.0.1", "8.8.8.8"), 7, testNodeB), "overlay_egress"},
		{"too big for the port", frame(Pkt4("10.240.0.1", "10.240.0.2", PktOpts{Payload: 600}), 7, testNodeB), "too_big"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := b.r.Stats().Drops[tc.drop]
			if _, err := b.o.Write([][]byte{tc.frame}, wgOffset); err != nil {
				t.Fatalf("Write: %v", err)
			}
			if got := b.r.Stats().Drops[tc.drop]; got != before+1 {
				t.Errorf("%s = %d, want %d", tc.drop, got, before+1)
			}
		})
	}
	if len(dst.writes) != 0 {
		t.Errorf("%d packets delivered", len(dst.writes))
	}
	s := b.r.Stats()
	var drops uint64
	for _, v := range s.Drops {
		drops += v
	}
	if s.Counters["rx_packets"] != uint64(len(tests)) || drops != uint64(len(tests)) {
		t.Errorf("rx %d drops %d, want %d each", s.Counters["rx_packets"], drops, len(tests))
	}
}

// TestOverlayQueueBackpressure: a port whose packets find no free overlay
// buffer waits for wireguard-go to take frames instead of dropping.
func TestOverlayQueueBackpressure(t *testing.T) {
	defer func(w time.Duration) { overlayWait = w }(overlayWait)
	overlayWait = time.Minute // the test decides when frames are taken
	a := newOverlayNode(t, testNodeA)
	src := attachNoLoop(t, a.r, newFakePort(64, false), 7, "10.240.0.1", 1390)
	a.setRemote(t, 7, "10.240.0.2", testNodeB)
	pkts := make([][]byte, 64)
	for i := range pkts {
		pkts[i] = UDP4("10.240.0.1", "10.240.0.2")
	}
	// Fill every buffer a network alone may hold (all but the reserve).
	for range overlayNetworkMax / 64 {
		src.forward(load(src, pkts...), a.r.now())
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		src.forward(load(src, pkts...), a.r.now())
	}()
	select {
	case <-done:
		t.Fatalf("forward returned with the queue full: drops %v", a.r.Stats().Drops)
	case <-time.After(50 * time.Millisecond):
	}
	// Now take frames like wireguard-go, until the router closes.
	var read atomic.Int64
	go func() {
		bufs, sizes := wgBufs(overlayBatch)
		for {
			n, err := a.o.Read(bufs, sizes, wgOffset)
			if err != nil {
				return
			}
			read.Add(int64(n))
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("forward still waiting after frames were taken")
	}
	for deadline := time.Now().Add(10 * time.Second); read.Load() < overlayNetworkMax+64; {
		if time.Now().After(deadline) {
			t.Fatalf("read %d frames", read.Load())
		}
		time.Sleep(time.Millisecond)
	}
	if s := a.r.Stats(); s.Drops["overlay_queue_full"] != 0 || s.Counters["encapsulated"] != overlayNetworkMax+64 {
		t.Errorf("drops %v counters %v", s.Drops, s.Counters)
	}
}

func TestOverlayQueueFull(t *testing.T) {
	a := newOverlayNode(t, testNodeA)
	src := attachNoLoop(t, a.r, newFakePort(64, false), 7, "10.240.0.1", 1390)
	a.setRemote(t, 7, "10.240.0.2", testNodeB)
	pkts := make([][]byte, 64)
	for i := range pkts {
		pkts[i] = UDP4("10.240.0.1", "10.240.0.2")
	}
	// A network alone holds all buffers but the reserve, then drops.
	const batches = overlayNetworkMax/64 + 2
	for range batches {
		src.forward(load(src, pkts...), a.r.now())
	}
	s := a.r.Stats()
	if s.Drops["overlay_queue_full"] != 2*64 || s.Counters["encapsulated"] != overlayNetworkMax {
		t.Errorf("drops %v counters %v", s.Drops, s.Counters)
	}
	if got := len(readFrames(t, a.o)); got != overlayNetworkMax {
		t.Errorf("read %d frames, want %d", got, overlayNetworkMax)
	}
	// Buffers are back: the next batch goes through.
	src.forward(load(src, pkts...), a.r.now())
	if got := a.r.Stats().Counters["encapsulated"]; got != overlayNetworkMax+64 {
		t.Errorf("encapsulated %d after draining", got)
	}
}

func TestOverlayClose(t *testing.T) {
	leaktest.Check(t)
	a := newOverlayNode(t, testNodeA)
	if _, err := a.r.EnableOverlay(netip.AddrFrom4(testNodeA)); !errors.Is(err, ErrOverlayEnabled) {
		t.Errorf("second EnableOverlay: %v", err)
	}
	if mtu, _ := a.o.MTU(); mtu != DefaultMTU+VXLANOverhead || a.o.BatchSize() != overlayBatch {
		t.Errorf("MTU %d batch %d", mtu, a.o.BatchSize())
	}
	if ev := <-a.o.Events(); ev != tun.EventUp {
		t.Errorf("first event %v, want EventUp", ev)
	}
	src := attachNoLoop(t, a.r, newFakePort(1, false), 7, "10.240.0.1", 1390)
	a.setRemote(t, 7, "10.240.0.2", testNodeB)

	bufs, sizes := wgBufs(overlayBatch)
	done := make(chan error)
	go func() {
		_, err := a.o.Read(bufs, sizes, wgOffset)
		done <- err
	}()
	if err := a.o.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-done; !errors.Is(err, os.ErrClosed) {
		t.Errorf("blocked Read after Close: %v, want os.ErrClosed", err)
	}
	if _, ok := <-a.o.Events(); ok {
		t.Error("Events not closed")
	}
	if _, err := a.o.Write(bufs[:1], wgOffset); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Write after Close: %v", err)
	}
	src.forward(load(src, UDP4("10.240.0.1", "10.240.0.2")), a.r.now())
	if s := a.r.Stats(); s.Drops["write_error"] != 1 {
		t.Errorf("send after Close: drops %v", s.Drops)
	}
	if err := a.o.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := a.r.Close(); err != nil {
		t.Errorf("Router.Close: %v", err)
	}
	if _, err := New(Config{}).EnableOverlay(netip.MustParseAddr("::1")); err == nil {
		t.Error("EnableOverlay accepted an IPv6 address")
	}
}

func TestRemoteEntries(t *testing.T) {
	r := New(Config{})
	t.Cleanup(func() { r.Close() })
	node := netip.AddrFrom4(testNodeB)
	addr := netip.MustParseAddr("10.240.0.2")
	attachNoLoop(t, r, newFakePort(1, false), 7, "10.240.0.1", 1390)

	if err := r.SetRemote(7, testPN(7), netip.MustParseAddr("10.240.0.1"), node); !errors.Is(err, ErrAddrInUse) {
		t.Errorf("SetRemote over a local port: %v", err)
	}
	if err := r.SetRemote(9, testPN(9), addr, node); err != nil {
		t.Fatal(err)
	}
	if s := r.Stats(); s.Networks != 2 {
		t.Errorf("Networks = %d with a remote-only network", s.Networks)
	}
	if err := r.SetRemote(9, testPN(9), addr, netip.AddrFrom4(testNodeA)); err != nil {
		t.Errorf("replacing a remote: %v", err)
	}
	idx, _ := HostIndex(addr)
	if e := r.state.networks[9].lookup(idx); e.kind != entryRemote || e.node != testNodeA || r.state.networks[9].remotes != 1 {
		t.Errorf("entry after replace: %+v", e)
	}
	if _, err := r.attach(newFakePort(1, false), PortConfig{Network: 9, PN: testPN(9), Addr: addr}); !errors.Is(err, ErrAddrInUse) {
		t.Errorf("AddPort over a remote: %v", err)
	}
	r.RemoveRemote(7, testPN(7), netip.MustParseAddr("10.240.0.1")) // local: no-op
	r.RemoveRemote(7, testPN(7), netip.MustParseAddr("10.240.0.3")) // absent: no-op
	r.RemoveRemote(9, testPN(9), addr)
	if s := r.Stats(); s.Networks != 1 || r.tableOf(9) != nil || r.tableOf(7) == nil {
		t.Errorf("after RemoveRemote: Networks %d", s.Networks)
	}
	for _, tc := range []struct {
		network    uint32
		addr, node string
	}{{1 << 24, "10.240.0.2", "100.64.0.1"}, {1, "10.240.3.255", "100.64.0.1"}, {1, "10.240.0.2", "::1"}} {
		if err := r.SetRemote(tc.network, testPN(tc.network), netip.MustParseAddr(tc.addr), netip.MustParseAddr(tc.node)); err == nil {
			t.Errorf("SetRemote(%d, %s, %s) accepted", tc.network, tc.addr, tc.node)
		}
	}
}

// encapFixture is a sender with a full batch of size-byte packets to a
// remote container, and wireguard-shaped buffers to drain the overlay.
func encapFixture(tb testing.TB, batch, size int) (*overlayNode, *Attached, [][]byte, []int) {
	a := newOverlayNode(tb, testNodeA)
	src := attachNoLoop(tb, a.r, newFakePort(batch, false), 7, "10.240.0.1", 1500)
	a.setRemote(tb, 7, "10.240.0.2", testNodeB)
	pkt := Pkt4("10.240.0.1", "10.240.0.2", PktOpts{Payload: size - 28})
	pkts := make([][]byte, batch)
	for i := range pkts {
		pkts[i] = pkt
	}
	load(src, pkts...)
	bufs, sizes := wgBufs(overlayBatch)
	return a, src, bufs, sizes
}

// decapFixture is a receiver with a local port and a batch of frames from
// node A, in wireguard-shaped buffers.
func decapFixture(tb testing.TB, batch, size int) (*overlayNode, *fakePort, [][]byte) {
	b := newOverlayNode(tb, testNodeB)
	dst := newFakePort(batch, false)
	attachNoLoop(tb, b.r, dst, 7, "10.240.0.2", 1500)
	b.setRemote(tb, 7, "10.240.0.1", testNodeA)
	pkt := Pkt4("10.240.0.1", "10.240.0.2", PktOpts{Payload: size - 28})
	frames := make([][]byte, batch)
	for i := range frames {
		frames[i] = make([]byte, 65535)
		copy(frames[i][wgOffset+VXLANOverhead:], pkt)
		frames[i] = frames[i][:wgOffset+VXLANOverhead+len(pkt)]
		encodeVXLAN(frames[i][wgOffset:], testNodeA, testNodeB, 7)
	}
	return b, dst, frames
}

func TestOverlayAllocs(t *testing.T) {
	t.Run("encap", func(t *testing.T) {
		a, src, bufs, sizes := encapFixture(t, 64, DefaultMTU)
		allocs := testing.AllocsPerRun(100, func() {
			src.forward(batchOf(src), a.r.now())
			for a.o.q.len() > 0 {
				a.o.Read(bufs, sizes, wgOffset)
			}
		})
		if allocs != 0 {
			t.Errorf("encap allocates %v times per batch of 64", allocs)
		}
		if s := a.r.Stats(); s.Counters["encapsulated"] == 0 || s.Drops["overlay_queue_full"] != 0 {
			t.Errorf("stats %v %v", s.Counters, s.Drops)
		}
	})
	t.Run("decap", func(t *testing.T) {
		b, dst, frames := decapFixture(t, 64, 1400)
		b.o.Write(frames, wgOffset) // warm the scratch pool
		// The frames' sender probed: every Write records hearing from it.
		b.r.ProbeOverlay([]netip.Addr{netip.AddrFrom4(testNodeA)})
		allocs := testing.AllocsPerRun(100, func() { b.o.Write(frames, wgOffset) })
		if allocs != 0 {
			t.Errorf("decap allocates %v times per batch of 64", allocs)
		}
		if dst.count.Load() == 0 {
			t.Error("nothing delivered")
		}
	})
}

// BenchmarkEncap measures a port's batch to a remote container: forward,
// copy into overlay buffers, VXLAN encapsulation, queueing, and the
// overlay Read that hands the frames to wireguard-go (copy included).
func BenchmarkEncap(b *testing.B) {
	for _, batch := range []int{1, 128} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			const size = DefaultMTU
			a, src, bufs, sizes := encapFixture(b, batch, size)
			b.SetBytes(int64(batch * size))
			b.ReportAllocs()
			for b.Loop() {
				src.forward(batchOf(src), a.r.now())
				for a.o.q.len() > 0 {
					a.o.Read(bufs, sizes, wgOffset)
				}
			}
			b.ReportMetric(float64(b.N)*float64(batch)/b.Elapsed().Seconds(), "pkts/s")
		})
	}
}

// BenchmarkDecap measures Overlay.Write of decrypted frames: decode, the
// source and destination checks and one Write to the (discarding) port.
func BenchmarkDecap(b *testing.B) {
	for _, batch := range []int{1, 128} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			const size = 1400
			n, _, frames := decapFixture(b, batch, size)
			b.SetBytes(int64(batch * size))
			b.ReportAllocs()
			for b.Loop() {
				n.o.Write(frames, wgOffset)
			}
			b.ReportMetric(float64(b.N)*float64(batch)/b.Elapsed().Seconds(), "pkts/s")
		})
	}
}

// VXLANFrame returns pkt encapsulated from src to dst (overlay addresses)
// in VNI vni, at offset off of the returned buffer, as wireguard-go would
// hand it to Overlay.Write. For tests outside the package.
func VXLANFrame(pkt []byte, src, dst netip.Addr, vni uint32, off int) []byte {
	buf := make([]byte, off+VXLANOverhead+len(pkt))
	copy(buf[off+VXLANOverhead:], pkt)
	encodeVXLAN(buf[off:], src.As4(), dst.As4(), vni)
	return buf
}

// FuzzOverlayWrite feeds arbitrary decrypted payloads to the inbound path
// of a node with a local port and remote entries: it must never panic, and
// every frame is accounted for.
func FuzzOverlayWrite(f *testing.F) {
	const evni = EgressVNIBit | 7 // a gateway's NAT here, and a return for the port at .3
	const rvni = EgressVNIBit | 8
	f.Add(VXLANFrame(UDP4("10.240.0.1", "10.240.0.2"), netip.AddrFrom4(testNodeA), netip.AddrFrom4(testNodeB), 7, 0))
	f.Add(VXLANFrame(UDP4("10.240.0.1", "10.240.3.255"), netip.AddrFrom4(testNodeA), netip.AddrFrom4(testNodeB), 7, 0))
	f.Add(VXLANFrame(UDP4("10.240.0.1", "192.0.2.1"), netip.AddrFrom4(testNodeA), netip.AddrFrom4(testNodeB), 7, 0))
	f.Add(VXLANFrame(UDP4("10.240.0.1", "192.0.2.1"), netip.AddrFrom4(testNodeA), netip.AddrFrom4(testNodeB), evni, 0))
	f.Add(VXLANFrame(UDP4("192.0.2.1", "10.240.0.3"), netip.AddrFrom4(testNodeA), netip.AddrFrom4(testNodeB), rvni, 0))
	f.Add(VXLANFrame(UDP4("10.240.0.9", "10.240.0.3"), netip.AddrFrom4(testNodeA), netip.AddrFrom4(testNodeB), rvni, 0))
	f.Add(VXLANFrame(append([]byte{0x45, 0, 0xff, 0xff}, make([]byte, 16)...), netip.AddrFrom4(testNodeA), netip.AddrFrom4(testNodeB), 7, 0))
	f.Add(VXLANFrame(make([]byte, 20), netip.AddrFrom4(testNodeA), netip.AddrFrom4(testNodeB), probeVNI, 0))
	f.Add([]byte{})
	b := newOverlayNode(f, testNodeB)
	attachNoLoop(f, b.r, newFakePort(8, false), 7, "10.240.0.2", 1390)
	ret := attachNoLoop(f, b.r, newFakePort(8, false), 7, "10.240.0.3", 1390)
	b.setRemote(f, 7, "10.240.0.1", testNodeA)
	nodeEgress := &countLocal{}
	if err := b.r.SetLocal(7, testPN(7), nodeEgress, LocalOptions{Egress: true}); err != nil {
		f.Fatal(err)
	}
	b.setRemote(f, evni, "10.240.0.1", testNodeA)
	if err := b.r.SetLocal(evni, testPN(evni), &countLocal{}, LocalOptions{Egress: true}); err != nil {
		f.Fatal(err)
	}
	gw := netip.AddrFrom4(testNodeA)
	if err := ret.SetEgress(&EgressRoute{VNI: rvni, Gateways: []EgressGateway{{Overlay: gw, New: true, Existing: true}}}); err != nil {
		f.Fatal(err)
	}
	if err := b.r.SetEgressReturn(rvni, 7, testPN(7), []netip.Addr{gw}); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		before := b.r.Stats()
		buf := append(make([]byte, wgOffset, wgOffset+len(frame)), frame...)
		if _, err := b.o.Write([][]byte{buf}, wgOffset); err != nil {
			t.Fatalf("Write: %v", err)
		}
		after := b.r.Stats()
		var drops uint64
		for k, v := range after.Drops {
			drops += v - before.Drops[k]
		}
		want := uint64(1)
		if f, ok := decodeVXLAN(frame); ok && f.dst == testNodeB && f.vni == probeVNI {
			want = 0 // probes are not traffic: outside the rx balance
		}
		if after.Counters["rx_packets"]-before.Counters["rx_packets"] != want ||
			drops+after.Counters["forwarded"]-before.Counters["forwarded"]+after.Counters["to_stack"]-before.Counters["to_stack"] != want {
			t.Errorf("frame not accounted for exactly once: %v %v", after.Counters, after.Drops)
		}
		if nodeEgress.n != 0 {
			t.Fatalf("a frame from the overlay reached the node's own egress stack")
		}
	})
}

// TestSetOverlayLocal: after a move to another overlay address, frames go
// out from it and only frames to it are accepted.
func TestSetOverlayLocal(t *testing.T) {
	b := newOverlayNode(t, testNodeB)
	dst := newFakePort(8, true)
	attachNoLoop(t, b.r, dst, 7, "10.240.0.2", 1390)
	b.setRemote(t, 7, "10.240.0.1", testNodeA)
	moved := [4]byte{100, 64, 9, 9}
	if err := b.r.SetOverlayLocal(netip.AddrFrom4(moved)); err != nil {
		t.Fatal(err)
	}
	if err := b.r.SetOverlayLocal(netip.MustParseAddr("::1")); err == nil {
		t.Error("SetOverlayLocal accepted an IPv6 address")
	}
	pkt := UDP4("10.240.0.1", "10.240.0.2")
	before := b.r.Stats().Drops["vxlan_malformed"]
	b.o.Write([][]byte{overlayFrame(pkt, 7, testNodeA, testNodeB)}, wgOffset)
	if got := b.r.Stats().Drops["vxlan_malformed"]; got != before+1 || len(dst.writes) != 0 {
		t.Fatalf("a frame to the old address: vxlan_malformed %d, %d writes", got-before, len(dst.writes))
	}
	b.o.Write([][]byte{overlayFrame(pkt, 7, testNodeA, moved)}, wgOffset)
	if len(dst.writes) != 1 {
		t.Fatalf("a frame to the new address: %d writes, want 1", len(dst.writes))
	}
	src := attachNoLoop(t, b.r, newFakePort(8, true), 7, "10.240.0.3", 1390)
	src.forward(load(src, UDP4("10.240.0.3", "10.240.0.1")), b.r.now())
	frames := readFrames(t, b.o)
	if len(frames) != 1 {
		t.Fatalf("%d frames, want 1", len(frames))
	}
	if f, ok := decodeVXLAN(frames[0][wgOffset:]); !ok || f.src != moved {
		t.Fatalf("frame from %v, want the new address %v", f.src, moved)
	}
}

// innerFrames decodes frames read from the overlay and returns their inner
// packets, checking the VXLAN layer (VNI, outer addresses).
func innerFrames(t *testing.T, frames [][]byte, vni uint32, src, dst [4]byte) [][]byte {
	t.Helper()
	var pkts [][]byte
	for i, fr := range frames {
		f, ok := decodeVXLAN(fr[wgOffset:])
		if !ok || f.vni != vni || f.src != src || f.dst != dst {
			t.Fatalf("frame %d: decoded %v %+v", i, ok, f)
		}
		pkts = append(pkts, f.inner)
	}
	return pkts
}

// TestOverlayGSO: a super-packet from an OffloadPort to a remote container
// is segmented straight into overlay frames: valid segments in order that
// carry every payload byte, counted as encapsulated, gso_split and
// gso_segments, the same as the port's own segmentation would make.
func TestOverlayGSO(t *testing.T) {
	n := newOverlayNode(t, testNodeA)
	a := attachNoLoop(t, n.r, newFakeOffloadPort(), 7, "10.240.0.1", 1390)
	n.setRemote(t, 7, "10.240.0.2", testNodeB)
	const payload, mss = 60000, 1338
	sp := super("10.240.0.1", "10.240.0.2", 1000, payload, mss)
	a.forward(loadVnet(a, sp, plainVnet(UDP4("10.240.0.1", "10.240.0.2"))), n.r.now())
	pkts := innerFrames(t, readFrames(t, n.o), 7, testNodeA, testNodeB)
	segs := (payload + mss - 1) / mss
	if len(pkts) != segs+1 {
		t.Fatalf("%d frames, want %d segments and the UDP packet", len(pkts), segs)
	}
	if got := segmentsOf(t, pkts[:segs], 1000, mss); got != payload {
		t.Errorf("segments carry %d payload bytes, want %d", got, payload)
	}
	if header.IPv4(pkts[segs]).Protocol() != uint8(header.UDPProtocolNumber) {
		t.Error("the plain packet after the super-packet is not the UDP one")
	}
	// The same segments as the kernel's (and SplitTCP's) segmentation.
	want := make([][]byte, segs)
	sizes := make([]int, segs)
	for i := range want {
		want[i] = make([]byte, 2048)
	}
	offload.SplitTCP(header.IPv4(sp.pkt), mss, 0, want, sizes, 0)
	for i := range segs {
		if !bytes.Equal(pkts[i], want[i][:sizes[i]]) {
			t.Fatalf("segment %d differs from SplitTCP's", i)
		}
	}
	s := n.r.Stats()
	if s.Counters["encapsulated"] != uint64(segs+1) || s.Counters["gso_split"] != 1 || s.Counters["gso_segments"] != uint64(segs) || s.Counters["gso_whole"] != 1 {
		t.Errorf("counters %v", s.Counters)
	}
	if s.Drops["too_big"] != 0 || s.Drops["malformed"] != 0 {
		t.Errorf("drops %v", s.Drops)
	}
}

// TestOverlayGSODrops: a super-packet whose segments are too large for
// the overlay is not handed to it whole (the port segments it and the
// segments meet the MTU check: too_big, ICMP), and a super-packet that
// meets a full queue drops its remaining segments, each counted.
func TestOverlayGSODrops(t *testing.T) {
	defer func(w time.Duration) { overlayWait = w }(overlayWait)
	overlayWait = time.Millisecond
	n := newOverlayNode(t, testNodeA)
	a := attachNoLoop(t, n.r, newFakeOffloadPort(), 7, "10.240.0.1", 1390)
	n.setRemote(t, 7, "10.240.0.2", testNodeB)
	big := super("10.240.0.1", "10.240.0.2", 0, 20000, DefaultMTU) // segments of 1430 bytes
	a.forward(loadVnet(a, big), n.r.now())
	if s := n.r.Stats(); s.Counters["gso_whole"] != 0 || s.Drops["too_big"] != 14 || s.Counters["icmp_sent"] == 0 {
		t.Errorf("oversize segments: counters %v drops %v", s.Counters, s.Drops)
	}
	readFrames(t, n.o) // the last, small segment
	a = attachNoLoop(t, n.r, newFakeOffloadPort(), 7, "10.240.0.4", 1390)
	// Fill the queue but for 10 buffers, then send 15 segments.
	pkts := batchTo("10.240.0.3", "10.240.0.2", 64)
	plain := attachNoLoop(t, n.r, newFakePort(64, false), 7, "10.240.0.3", 1390)
	for range (overlayNetworkMax - 10) / 64 {
		plain.forward(load(plain, pkts...), n.r.now())
	}
	plain.forward(load(plain, pkts[:(overlayNetworkMax-10)%64]...), n.r.now())
	a.forward(loadVnet(a, super("10.240.0.4", "10.240.0.2", 0, 15*1338, 1338)), n.r.now())
	c := a.Counters()
	if c.OverlayPackets != 10 || c.Drops[dropOverlayQueueFull] != 5 {
		t.Errorf("super-packet into a queue with 10 free: overlay %d, overlay_queue_full %d; want 10 and 5", c.OverlayPackets, c.Drops[dropOverlayQueueFull])
	}
}

// gsoFixture is an OffloadPort with a batch of TCP super-packets of
// payload bytes (segments of mss) for a remote container.
func gsoFixture(tb testing.TB, supers, payload, mss int) (*overlayNode, *Attached, []vnetPkt) {
	n := newOverlayNode(tb, testNodeA)
	a := attachNoLoop(tb, n.r, newFakeOffloadPort(), 7, "10.240.0.1", 1390)
	n.setRemote(tb, 7, "10.240.0.2", testNodeB)
	pkts := make([]vnetPkt, supers)
	for i := range pkts {
		pkts[i] = super("10.240.0.1", "10.240.0.2", uint32(i*payload), payload, mss)
	}
	return n, a, pkts
}

func TestOverlayGSOAllocs(t *testing.T) {
	n, a, pkts := gsoFixture(t, 4, 60000, 1338)
	bufs, sizes := wgBufs(overlayBatch)
	b := loadVnet(a, pkts...)
	run := func() {
		a.forward(b, n.r.now())
		for n.o.q.len() > 0 {
			n.o.Read(bufs, sizes, wgOffset)
		}
	}
	run()
	// AllocsPerRun runs it once more to warm up: 52 batches in all.
	if allocs := testing.AllocsPerRun(50, run); allocs != 0 {
		t.Errorf("super-packets to the overlay allocate %v times per batch", allocs)
	}
	if s := n.r.Stats(); s.Counters["gso_split"] != 52*4 || s.Drops["overlay_queue_full"] != 0 {
		t.Errorf("counters %v drops %v", s.Counters, s.Drops)
	}
}

// BenchmarkOverlayHandoffGSO measures the hand-off of a container's TCP
// super-packets (an OffloadPort's batch) to wireguard-go: forward,
// segmentation, VXLAN encapsulation, the fair queue and the overlay Read
// that copies the frames into wireguard-go's buffers. Bytes are the
// super-packets' payload.
func BenchmarkOverlayHandoffGSO(b *testing.B) {
	const supers, payload, mss = 8, 64000, 1338
	n, a, pkts := gsoFixture(b, supers, payload, mss)
	bufs, sizes := wgBufs(overlayBatch)
	rb := loadVnet(a, pkts...)
	b.SetBytes(supers * payload)
	b.ReportAllocs()
	for b.Loop() {
		a.forward(rb, n.r.now())
		for n.o.q.len() > 0 {
			n.o.Read(bufs, sizes, wgOffset)
		}
	}
	if s := n.r.Stats(); s.Drops["overlay_queue_full"] != 0 || s.Drops["too_big"] != 0 {
		b.Fatalf("drops %v", s.Drops)
	}
}
