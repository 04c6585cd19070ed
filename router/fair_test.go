package router

import (
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/poll"
)

// TestFairSharePause: a backlogged port pauses for as long as its batch
// took (at most fairMaxPause), only while a port of another network
// forwarded within fairWindow; a port that is not backlogged, or whose
// network is the only one forwarding, never pauses.
func TestFairSharePause(t *testing.T) {
	var f fairShare
	us := int64(time.Microsecond)
	at := int64(time.Second)
	for i := range 100 {
		if d := f.pause(1, at+int64(i)*us, 300*us, true); d != 0 {
			t.Fatalf("network 1 alone, batch %d: pause %v", i, d)
		}
	}
	at += 100 * us
	if d := f.pause(2, at, 5*us, false); d != 0 {
		t.Fatalf("network 2's sparse batch paused %v", d)
	}
	if d := f.pause(1, at+us, 300*us, true); d != 300*time.Microsecond {
		t.Fatalf("network 1 backlogged after network 2 forwarded: pause %v, want 300µs", d)
	}
	if d := f.pause(1, at+2*us, 5*int64(time.Millisecond), true); d != fairMaxPause {
		t.Fatalf("a 5 ms batch: pause %v, want %v", d, fairMaxPause)
	}
	if d := f.pause(1, at+3*us, 300*us, false); d != 0 {
		t.Fatalf("network 1 not backlogged: pause %v", d)
	}
	if d := f.pause(2, at+4*us, 300*us, true); d != 300*time.Microsecond {
		t.Fatalf("network 2 backlogged after network 1: pause %v, want 300µs", d)
	}
	// Network 2 falls quiet. Network 1's next batch is still the first
	// after one of network 2's; a fairWindow later network 1 has the node.
	at += 4*us + int64(fairWindow)
	if d := f.pause(1, at, 300*us, true); d != 300*time.Microsecond {
		t.Fatalf("network 1's first batch after network 2's: pause %v, want 300µs", d)
	}
	at += int64(fairWindow)
	for i := range 100 {
		if d := f.pause(1, at+int64(i)*us, 300*us, true); d != 0 {
			t.Fatalf("network 1 alone again, batch %d: pause %v", i, d)
		}
	}
}

// floodPort is a Port whose Read always fills the whole batch: a
// container whose TUN queue never empties.
type floodPort struct {
	*fakePort
	pkt []byte
}

func (p *floodPort) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case <-p.closed:
		return 0, os.ErrClosed
	default:
	}
	for i := range bufs {
		sizes[i] = copy(bufs[i][offset:], p.pkt)
	}
	return len(bufs), nil
}

// TestFairPausesFlood: a flooding port pauses (fair_pauses) only while a
// port of another network forwards, and the quiet port never does.
func TestFairPausesFlood(t *testing.T) {
	r := New(Config{Logger: NewTestLogger(t)})
	defer r.Close()
	// To an unknown destination of its own network: dropped, cheap.
	flood := &floodPort{fakePort: newFakePort(16, false), pkt: UDP4("10.240.0.2", "10.240.0.9")}
	a, err := r.AddPort(flood, PortConfig{Network: 7, PN: testPN(7), Addr: netip.MustParseAddr("10.240.0.2"), Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	quiet := newChanPort(8)
	b, err := r.AddPort(quiet, PortConfig{Network: 8, PN: testPN(8), Addr: netip.MustParseAddr("10.240.0.3"), Name: "b"})
	if err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "the flood to forward 100 batches", func() bool {
		return a.Stats().RxPackets >= 1600
	})
	if got := a.ctr[ctrFairPauses].Load(); got != 0 {
		t.Fatalf("the flooding port paused %d times with no other network forwarding", got)
	}
	for i := range 20 {
		quiet.in <- UDP4("10.240.0.3", "10.240.0.9")
		poll.Until(t, 10*time.Second, "the quiet port's packet", func() bool {
			return b.Stats().RxPackets == uint64(i+1)
		})
	}
	poll.Until(t, 10*time.Second, "the flood to pause", func() bool {
		return a.ctr[ctrFairPauses].Load() > 0
	})
	if got := b.ctr[ctrFairPauses].Load(); got != 0 {
		t.Fatalf("the quiet port paused %d times", got)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

// chanPort is a Port that reads one packet per Read from in.
type chanPort struct {
	*fakePort
	in chan []byte
}

func newChanPort(batch int) *chanPort {
	return &chanPort{fakePort: newFakePort(batch, false), in: make(chan []byte)}
}

func (p *chanPort) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case <-p.closed:
		return 0, os.ErrClosed
	case pkt := <-p.in:
		sizes[0] = copy(bufs[0][offset:], pkt)
		return 1, nil
	}
}

// BenchmarkFairPause: the read loop's step per batch, on a contended node
// (two networks alternating), allocates nothing.
func BenchmarkFairPause(b *testing.B) {
	var f fairShare
	b.ReportAllocs()
	now := int64(time.Second)
	for i := range b.N {
		now += 1000
		f.pause(uint32(1+i&1), now, 0, true)
	}
}
