package router

import (
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

// batchTo is n UDP packets from src to dst.
func batchTo(src, dst string, n int) [][]byte {
	pkts := make([][]byte, n)
	for i := range pkts {
		pkts[i] = UDP4(src, dst)
	}
	return pkts
}

// readVNIs reads one batch from the overlay and returns the VNI of each
// frame, in order.
func readVNIs(t *testing.T, o *Overlay, max int) []uint32 {
	t.Helper()
	bufs, sizes := wgBufs(max)
	n, err := o.Read(bufs, sizes, wgOffset)
	if err != nil {
		t.Fatalf("Overlay.Read: %v", err)
	}
	vnis := make([]uint32, n)
	for i := range n {
		f, ok := decodeVXLAN(bufs[i][wgOffset : wgOffset+sizes[i]])
		if !ok {
			t.Fatalf("frame %d does not decode", i)
		}
		vnis[i] = f.vni
	}
	return vnis
}

func dropOf(a *Attached, c counter) uint64 { return a.Counters().Drops[c] }

// TestOverlayQueueFairShare: network 7 floods the queue towards
// wireguard-go while it is alone, network 8 then starts sending: 8's
// packets get in at once (the reserve), wireguard-go's reader alternates
// between the two, 7 is held to half the queue while 8 is active
// (overlay_fair_share, counted on 7's port and network) and gets all of it
// again when 8 is idle.
func TestOverlayQueueFairShare(t *testing.T) {
	defer func(w time.Duration) { overlayWait = w }(overlayWait)
	overlayWait = time.Millisecond // the flood's drops come sooner
	n := newOverlayNode(t, testNodeA)
	flood := attachNoLoop(t, n.r, newFakePort(64, false), 7, "10.240.0.1", 1390)
	n.setRemote(t, 7, "10.240.0.2", testNodeB)
	quiet := attachNoLoop(t, n.r, newFakePort(64, false), 8, "10.240.0.1", 1390)
	n.setRemote(t, 8, "10.240.0.2", testNodeB)
	floodPkts := batchTo("10.240.0.1", "10.240.0.2", 64)
	quietPkts := batchTo("10.240.0.1", "10.240.0.2", overlayReserve)

	// Alone, network 7 takes everything but the reserve; one more batch
	// finds the queue full.
	for range overlayNetworkMax/64 + 1 {
		flood.forward(load(flood, floodPkts...), n.r.now())
	}
	if got := dropOf(flood, dropOverlayQueueFull); got != 64 {
		t.Fatalf("network 7 alone: overlay_queue_full %d, want 64", got)
	}

	// Network 8 gets in at once.
	quiet.forward(load(quiet, quietPkts...), n.r.now())
	if c := quiet.Counters(); c.OverlayPackets != overlayReserve || slices.Max(c.Drops[:]) != 0 {
		t.Fatalf("network 8 during the flood: overlay %d drops %v", c.OverlayPackets, c.Drops)
	}

	// wireguard-go's reader takes one frame of each network in turn.
	vnis := readVNIs(t, n.o, 2*overlayReserve)
	for i, v := range vnis {
		if want := []uint32{7, 8}[i%2]; v != want {
			t.Fatalf("read order %v: frame %d of network %d, want %d", vnis, i, v, want)
		}
	}
	if len(vnis) != 2*overlayReserve {
		t.Fatalf("read %d frames, want %d", len(vnis), 2*overlayReserve)
	}

	// While network 8 has frames queued, 7 is over its half: its packets
	// wait and then drop as overlay_fair_share, and 8 takes what is freed.
	quiet.forward(load(quiet, quietPkts...), n.r.now())
	readVNIs(t, n.o, 2) // one of each; 8 stays active
	flood.forward(load(flood, floodPkts...), n.r.now())
	if got := dropOf(flood, dropOverlayFairShare); got != 64 {
		t.Errorf("network 7 over its share: overlay_fair_share %d, want 64", got)
	}
	if got := n.r.NetworkCounters()[7].Drops[dropOverlayFairShare]; got != 64 {
		t.Errorf("network 7's counters: overlay_fair_share %d, want 64", got)
	}
	quiet.forward(load(quiet, quietPkts...), n.r.now())
	if c := quiet.Counters(); c.OverlayPackets != 3*overlayReserve || slices.Max(c.Drops[:]) != 0 {
		t.Errorf("network 8 beside the flood: overlay %d drops %v", c.OverlayPackets, c.Drops)
	}

	// Drain: every frame comes out, each network's in its own order.
	var got [2]int
	for n.o.q.len() > 0 {
		for _, v := range readVNIs(t, n.o, overlayBatch) {
			got[v-7]++
		}
	}
	wantFlood := overlayNetworkMax - overlayReserve - 1
	if got != [2]int{wantFlood, 2*overlayReserve - 1} {
		t.Errorf("drained %d frames of 7 and %d of 8, want %d and %d", got[0], got[1], wantFlood, 2*overlayReserve-1)
	}

	// Network 8 idle again: 7 may use the whole queue but the reserve.
	for range overlayNetworkMax / 64 {
		flood.forward(load(flood, floodPkts...), n.r.now())
	}
	if q := n.o.q.len(); q != overlayNetworkMax/64*64 {
		t.Errorf("network 7 alone again queued %d, want %d", q, overlayNetworkMax/64*64)
	}
}

// TestOverlayQueueFairUnderLoad: while a port of network 7 floods without
// pause (waiting on the queue, never giving up) and wireguard-go's reader
// drains, every packet of network 8 goes through, and 8's share of what
// the reader takes while both have frames queued is its half.
func TestOverlayQueueFairUnderLoad(t *testing.T) {
	defer func(w time.Duration) { overlayWait = w }(overlayWait)
	overlayWait = time.Minute // nothing drops: the waits are the backpressure
	n := newOverlayNode(t, testNodeA)
	flood := attachNoLoop(t, n.r, newFakePort(64, false), 7, "10.240.0.1", 1390)
	n.setRemote(t, 7, "10.240.0.2", testNodeB)
	quiet := attachNoLoop(t, n.r, newFakePort(64, false), 8, "10.240.0.1", 1390)
	n.setRemote(t, 8, "10.240.0.2", testNodeB)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		pkts := batchTo("10.240.0.1", "10.240.0.2", 64)
		for {
			select {
			case <-stop:
				return
			default:
			}
			flood.forward(load(flood, pkts...), n.r.now())
		}
	}()
	// Let the flood fill the queue before network 8 starts.
	for deadline := time.Now().Add(10 * time.Second); n.o.q.len() < overlayNetworkMax; {
		if time.Now().After(deadline) {
			t.Fatalf("the flood queued only %d frames", n.o.q.len())
		}
		time.Sleep(time.Millisecond)
	}

	const quietBatches = 40
	wg.Add(1)
	go func() {
		defer wg.Done()
		pkts := batchTo("10.240.0.1", "10.240.0.2", 64)
		for range quietBatches {
			quiet.forward(load(quiet, pkts...), n.r.now())
		}
	}()
	// Read like wireguard-go until all of 8's frames are out. While 8 has
	// frames queued, the reader alternates: no two frames of 7 in a row
	// come before the last frame of 8 in a batch.
	var got8 int
	bufs, sizes := wgBufs(overlayBatch)
	for deadline := time.Now().Add(30 * time.Second); got8 < quietBatches*64; {
		if time.Now().After(deadline) {
			t.Fatalf("read %d of network 8's %d frames", got8, quietBatches*64)
		}
		k, err := n.o.Read(bufs, sizes, wgOffset)
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		vnis := make([]uint32, k)
		last8 := -1
		for i := range k {
			f, _ := decodeVXLAN(bufs[i][wgOffset : wgOffset+sizes[i]])
			vnis[i] = f.vni
			if f.vni == 8 {
				got8++
				last8 = i
			}
		}
		for i := 1; i < last8; i++ {
			if vnis[i] == 7 && vnis[i-1] == 7 {
				t.Fatalf("read %v: two frames of the flood while network 8 waited", vnis)
			}
		}
	}
	close(stop)
	n.o.Close() // ends the flood's last wait
	wg.Wait()
	if c := quiet.Counters(); c.OverlayPackets != quietBatches*64 || slices.Max(c.Drops[:]) != 0 {
		t.Errorf("network 8: overlay %d drops %v", c.OverlayPackets, c.Drops)
	}
	if d := dropOf(flood, dropOverlayFairShare); d != 0 {
		t.Errorf("network 7 dropped %d (overlay_fair_share) with a minute to wait", d)
	}
}

// TestOverlayProbesDuringFlood: the overlay probes (health of gateways
// and peers) have their own sub-queue and still get out while a network
// holds all it can.
func TestOverlayProbesDuringFlood(t *testing.T) {
	n := newOverlayNode(t, testNodeA)
	flood := attachNoLoop(t, n.r, newFakePort(64, false), 7, "10.240.0.1", 1390)
	n.setRemote(t, 7, "10.240.0.2", testNodeB)
	pkts := batchTo("10.240.0.1", "10.240.0.2", 64)
	for range overlayNetworkMax / 64 {
		flood.forward(load(flood, pkts...), n.r.now())
	}
	n.r.ProbeOverlay([]netip.Addr{netip.AddrFrom4(testNodeB)})
	if got := n.r.probe.sent.Load(); got != 1 {
		t.Fatalf("probes sent during the flood: %d, want 1", got)
	}
	vnis := readVNIs(t, n.o, 2)
	if !slices.Contains(vnis, probeVNI) {
		t.Errorf("first read %v has no probe", vnis)
	}
}

// TestOverlayQueueClasses: idle sub-queues are forgotten once there are
// many, active ones never.
func TestOverlayQueueClasses(t *testing.T) {
	q := newOverlayQueue(64)
	ob, _ := q.take(nil, 1, nil)
	q.push(ob, 1)
	for vni := uint32(2); vni < overlayClassesKept+10; vni++ {
		ob, why := q.take(nil, vni, nil)
		if ob == nil {
			t.Fatalf("vni %d refused (%s)", vni, counterNames[why])
		}
		q.release([]*overlayBuf{ob}) // never queued: the class stays idle
	}
	if len(q.classes) > overlayClassesKept {
		t.Errorf("%d sub-queues kept, want at most %d", len(q.classes), overlayClassesKept)
	}
	if c := q.classes[1]; c == nil || c.n != 1 {
		t.Errorf("the active sub-queue was forgotten: %+v", c)
	}
}

// TestICMPRateLimitPerPort: the router's ICMP errors are limited per port
// (the bucket belongs to the port's read goroutine), so a container that
// uses up its own errors leaves another tenant's, and its neighbour's in
// the same network, untouched.
func TestICMPRateLimitPerPort(t *testing.T) {
	r := New(Config{})
	t.Cleanup(func() { r.Close() })
	noisy := attachNoLoop(t, r, newFakePort(64, false), 7, "10.240.0.1", 1390)
	neighbour := attachNoLoop(t, r, newFakePort(64, false), 7, "10.240.0.3", 1390)
	tenant := attachNoLoop(t, r, newFakePort(64, false), 8, "10.240.0.1", 1390)
	now := r.now() // one instant: no bucket refills during the test
	noisy.forward(load(noisy, batchTo("10.240.0.1", "10.240.0.99", 64)...), now)
	if sent, limited := noisy.ctr[ctrICMPSent].Load(), noisy.ctr[ctrICMPRateLimited].Load(); sent != icmpBurst || limited != 64-icmpBurst {
		t.Fatalf("noisy port: icmp_sent %d icmp_rate_limited %d, want %d and %d", sent, limited, icmpBurst, 64-icmpBurst)
	}
	for _, a := range []*Attached{neighbour, tenant} {
		src := a.cfg.Addr.String()
		a.forward(load(a, batchTo(src, "10.240.0.99", icmpBurst)...), now)
		if sent, limited := a.ctr[ctrICMPSent].Load(), a.ctr[ctrICMPRateLimited].Load(); sent != icmpBurst || limited != 0 {
			t.Errorf("port %s of network %d: icmp_sent %d icmp_rate_limited %d, want %d and 0", src, a.cfg.Network, sent, limited, icmpBurst)
		}
	}
}

// BenchmarkEncapTwoNetworks: batches of two networks' ports towards one
// node, drained by the round-robin reader (the fair queue's cost with more
// than one sub-queue active).
func BenchmarkEncapTwoNetworks(b *testing.B) {
	const batch, size = 64, DefaultMTU
	n := newOverlayNode(b, testNodeA)
	var ports [2]*Attached
	for i, vni := range []uint32{7, 8} {
		ports[i] = attachNoLoop(b, n.r, newFakePort(batch, false), vni, "10.240.0.1", 1500)
		n.setRemote(b, vni, "10.240.0.2", testNodeB)
		pkt := Pkt4("10.240.0.1", "10.240.0.2", PktOpts{Payload: size - 28})
		pkts := make([][]byte, batch)
		for j := range pkts {
			pkts[j] = pkt
		}
		load(ports[i], pkts...)
	}
	bufs, sizes := wgBufs(overlayBatch)
	b.SetBytes(int64(2 * batch * size))
	b.ReportAllocs()
	for b.Loop() {
		for _, a := range ports {
			a.forward(batchOf(a), n.r.now())
		}
		for n.o.q.len() > 0 {
			n.o.Read(bufs, sizes, wgOffset)
		}
	}
	if s := n.r.Stats(); s.Drops["overlay_fair_share"]+s.Drops["overlay_queue_full"] != 0 {
		b.Fatalf("drops %v", s.Drops)
	}
	b.ReportMetric(float64(b.N)*2*batch/b.Elapsed().Seconds(), "pkts/s")
}

// TestOverlayFairAllocs: queueing and round-robin draining of two
// networks, and a port's wait that runs out over its share, allocate
// nothing per packet.
func TestOverlayFairAllocs(t *testing.T) {
	defer func(w time.Duration) { overlayWait = w }(overlayWait)
	overlayWait = time.Microsecond
	n := newOverlayNode(t, testNodeA)
	flood := attachNoLoop(t, n.r, newFakePort(64, false), 7, "10.240.0.1", 1390)
	n.setRemote(t, 7, "10.240.0.2", testNodeB)
	quiet := attachNoLoop(t, n.r, newFakePort(64, false), 8, "10.240.0.1", 1390)
	n.setRemote(t, 8, "10.240.0.2", testNodeB)
	floodPkts, quietPkts := batchTo("10.240.0.1", "10.240.0.2", 64), batchTo("10.240.0.1", "10.240.0.2", 8)
	bufs, sizes := wgBufs(overlayBatch)
	run := func() {
		for range overlayQueueLen / 64 { // over its share: waits, then drops
			flood.forward(load(flood, floodPkts...), n.r.now())
			quiet.forward(load(quiet, quietPkts...), n.r.now())
		}
		for n.o.q.len() > 0 {
			n.o.Read(bufs, sizes, wgOffset)
		}
	}
	run() // the port's wait signal and timer are made once
	if dropOf(flood, dropOverlayFairShare) == 0 {
		t.Fatal("the flood never went over its share")
	}
	if allocs := testing.AllocsPerRun(20, run); allocs != 0 {
		t.Errorf("%v allocations per run", allocs)
	}
	if c := quiet.Counters(); slices.Max(c.Drops[:]) != 0 {
		t.Errorf("network 8 dropped: %v", c.Drops)
	}
}
