package router

import (
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// countBind is a Bind that sends nothing: the test decides when packets
// leave.
type countBind struct{ conn.Bind }

func (countBind) Send([][]byte, conn.Endpoint) error { return nil }

// queueFrames queues n small frames of vni, as a Local's writer would.
func queueFrames(t *testing.T, o *Overlay, vni uint32, n int) {
	t.Helper()
	pkt := UDP4("10.240.0.2", "10.240.0.3")
	var c batchCounters
	for range n {
		o.send(pkt, vni, [4]byte{100, 64, 0, 2}, &c)
	}
	if c[ctrEncapsulated] != uint64(n) {
		t.Fatalf("queued %d of %d frames (drops %v)", c[ctrEncapsulated], n, c)
	}
}

// TestOverlayInflight: a paced Overlay hands wireguard-go at most
// overlayInflight frames that its bind has not sent; a Read beyond that
// waits (overlay_inflight_waits) and goes on once the bind sends.
func TestOverlayInflight(t *testing.T) {
	defer func(d time.Duration) { overlayInflightLost = d }(overlayInflightLost)
	overlayInflightLost = time.Hour // only sends end the wait
	n := newOverlayNode(t, [4]byte{100, 64, 0, 1})
	bind := n.o.pace(countBind{})
	queueFrames(t, n.o, 7, 3*overlayBatch)
	bufs, sizes := wgBufs(overlayBatch)
	for i := range overlayInflight / overlayBatch {
		if got, err := n.o.Read(bufs, sizes, wgOffset); err != nil || got != overlayBatch {
			t.Fatalf("Read %d: %d frames, %v", i, got, err)
		}
	}
	if got := n.o.inflight.Load(); got != overlayInflight {
		t.Fatalf("in flight after two Reads: %d, want %d", got, overlayInflight)
	}
	done := make(chan int)
	go func() {
		got, _ := n.o.Read(bufs, sizes, wgOffset)
		done <- got
	}()
	// The Read counts its wait before it blocks on the bind.
	for n.o.ctr[ctrOverlayInflightWaits].Load() == 0 {
		select {
		case got := <-done:
			t.Fatalf("Read with %d frames in flight returned %d frames without waiting", overlayInflight, got)
		default:
			time.Sleep(time.Millisecond)
		}
	}
	select {
	case got := <-done:
		t.Fatalf("Read returned %d frames before the bind sent any", got)
	default:
	}
	// Handshakes and keepalives are sent too: the count stays ≥ 0.
	if err := bind.Send(make([][]byte, overlayBatch+1), nil); err != nil {
		t.Fatal(err)
	}
	if got := <-done; got != overlayBatch {
		t.Fatalf("Read after the send: %d frames, want %d", got, overlayBatch)
	}
	if got, want := n.o.inflight.Load(), int64(overlayInflight-1); got != want {
		t.Fatalf("in flight: %d, want %d", got, want)
	}
	bind.Send(make([][]byte, 10*overlayInflight), nil)
	if got := n.o.inflight.Load(); got != 0 {
		t.Fatalf("in flight after more sends than frames: %d, want 0", got)
	}
	if s := n.r.Stats(); s.Counters["overlay_inflight_waits"] != 1 || s.Counters["overlay_inflight_lost"] != 0 {
		t.Fatalf("counters: waits %d, lost %d; want 1, 0", s.Counters["overlay_inflight_waits"], s.Counters["overlay_inflight_lost"])
	}
}

// TestOverlayInflightLost: frames wireguard-go drops are never sent; a
// wait in which nothing is sent for overlayInflightLost forgets them
// (overlay_inflight_lost) instead of stalling the overlay for good.
func TestOverlayInflightLost(t *testing.T) {
	defer func(d time.Duration) { overlayInflightLost = d }(overlayInflightLost)
	overlayInflightLost = time.Millisecond
	n := newOverlayNode(t, [4]byte{100, 64, 0, 1})
	n.o.pace(countBind{})
	queueFrames(t, n.o, 7, 3*overlayBatch)
	bufs, sizes := wgBufs(overlayBatch)
	for i := range 3 {
		if got, err := n.o.Read(bufs, sizes, wgOffset); err != nil || got != overlayBatch {
			t.Fatalf("Read %d: %d frames, %v", i, got, err)
		}
	}
	if got := n.o.inflight.Load(); got != overlayBatch {
		t.Fatalf("in flight after the lost ones were forgotten: %d, want %d", got, overlayBatch)
	}
	if s := n.r.Stats(); s.Counters["overlay_inflight_waits"] != 1 || s.Counters["overlay_inflight_lost"] != 1 {
		t.Fatalf("counters: waits %d, lost %d; want 1, 1", s.Counters["overlay_inflight_waits"], s.Counters["overlay_inflight_lost"])
	}
}

// TestOverlayInflightClose: Close ends a Read waiting for sends.
func TestOverlayInflightClose(t *testing.T) {
	defer func(d time.Duration) { overlayInflightLost = d }(overlayInflightLost)
	overlayInflightLost = time.Hour
	n := newOverlayNode(t, [4]byte{100, 64, 0, 1})
	n.o.pace(countBind{})
	queueFrames(t, n.o, 7, 3*overlayBatch)
	bufs, sizes := wgBufs(overlayBatch)
	for range 2 {
		n.o.Read(bufs, sizes, wgOffset)
	}
	done := make(chan error)
	go func() {
		_, err := n.o.Read(bufs, sizes, wgOffset)
		done <- err
	}()
	for n.o.ctr[ctrOverlayInflightWaits].Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	n.o.Close()
	if err := <-done; err == nil {
		t.Fatal("Read waiting for sends returned no error after Close")
	}
}
