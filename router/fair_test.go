package router

import (
	"net/netip"
	"os"
	"sync/atomic"
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
		if d, _ := f.pause(1, at+int64(i)*us, 300*us, true); d != 0 {
			t.Fatalf("network 1 alone, batch %d: pause %v", i, d)
		}
	}
	at += 100 * us
	if d, _ := f.pause(2, at, 5*us, false); d != 0 {
		t.Fatalf("network 2's sparse batch paused %v", d)
	}
	if d, _ := f.pause(1, at+us, 300*us, true); d != 300*time.Microsecond {
		t.Fatalf("network 1 backlogged after network 2 forwarded: pause %v, want 300µs", d)
	}
	if d, _ := f.pause(1, at+2*us, 5*int64(time.Millisecond), true); d != fairMaxPause {
		t.Fatalf("a 5 ms batch: pause %v, want %v", d, fairMaxPause)
	}
	if d, _ := f.pause(1, at+3*us, 300*us, false); d != 0 {
		t.Fatalf("network 1 not backlogged: pause %v", d)
	}
	if d, _ := f.pause(2, at+4*us, 300*us, true); d != 300*time.Microsecond {
		t.Fatalf("network 2 backlogged after network 1: pause %v, want 300µs", d)
	}
	// Network 2 falls quiet. Network 1's next batch is still the first
	// after one of network 2's; a fairWindow later network 1 has the node.
	at += 4*us + int64(fairWindow)
	if d, _ := f.pause(1, at, 300*us, true); d != 300*time.Microsecond {
		t.Fatalf("network 1's first batch after network 2's: pause %v, want 300µs", d)
	}
	at += int64(fairWindow)
	for i := range 100 {
		if d, _ := f.pause(1, at+int64(i)*us, 300*us, true); d != 0 {
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

// TestFairContended: pause reports contention only within fairWindow of
// another network's batch, backlogged or not.
func TestFairContended(t *testing.T) {
	var f fairShare
	at := int64(time.Second)
	if _, c := f.pause(1, at, 0, false); c {
		t.Fatal("the first network alone: contended")
	}
	if _, c := f.pause(2, at+1000, 0, false); !c {
		t.Fatal("network 2 after network 1: not contended")
	}
	if d, c := f.pause(1, at+2000, 0, false); !c || d != 0 {
		t.Fatalf("network 1, not backlogged: pause %v, contended %v; want 0, true", d, c)
	}
	if _, c := f.pause(1, at+2000+int64(fairWindow), 0, false); c {
		t.Fatal("a fairWindow later: still contended")
	}
}

// TestPacer: a burst is free, then every token costs its interval; one
// wait is at most maxWait, the debt beyond it is paid by later batches,
// and the debt is bounded by the burst.
func TestPacer(t *testing.T) {
	ms := int64(time.Millisecond)
	at := int64(time.Second)
	p := newPacer(1000, 10, at) // a token per ms
	if d := p.charge(at, 10, 4*time.Millisecond); d != 0 {
		t.Fatalf("the burst: wait %v", d)
	}
	if d := p.charge(at, 2, 4*time.Millisecond); d != 2*time.Millisecond {
		t.Fatalf("2 over the burst: wait %v, want 2ms", d)
	}
	// The caller slept the 2 ms: the debt is paid, the next token costs 1 ms.
	if d := p.charge(at+2*ms, 1, 4*time.Millisecond); d != time.Millisecond {
		t.Fatalf("after paying: wait %v, want 1ms", d)
	}
	// 6 more a ms later: 6 ms of debt, 4 ms now; after the 4 ms sleep
	// 2 are left for the next batch.
	at += 3 * ms
	if d := p.charge(at, 6, 4*time.Millisecond); d != 4*time.Millisecond {
		t.Fatalf("a debt of 6: wait %v, want the 4ms cap", d)
	}
	at += 4 * ms
	if d := p.charge(at, 0, 4*time.Millisecond); d != 2*time.Millisecond {
		t.Fatalf("the rest of the debt: wait %v, want 2ms", d)
	}
	// A huge batch: the debt stops at the burst (10 ms).
	at += 2 * ms
	p.charge(at, 1000, 4*time.Millisecond)
	if p.tokens != -10 {
		t.Fatalf("debt %d tokens, want the burst (10)", -p.tokens)
	}
	// 20 ms later: the debt is paid and the bucket full again.
	if d := p.charge(at+20*ms, 10, 4*time.Millisecond); d != 0 {
		t.Fatalf("refilled: wait %v", d)
	}
}

// resolverPort is a Port whose Read returns a few queries to the
// resolver per batch, as a DNS flood with many clients does.
type resolverPort struct {
	*fakePort
	pkt []byte
}

func (p *resolverPort) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case <-p.closed:
		return 0, os.ErrClosed
	default:
	}
	n := min(len(bufs), 8) // never a full batch: never backlogged
	for i := range n {
		sizes[i] = copy(bufs[i][offset:], p.pkt)
	}
	return n, nil
}

// discardLocal takes the resolver's packets and drops them.
type discardLocal struct{ n atomic.Uint64 }

func (l *discardLocal) Deliver([]byte) { l.n.Add(1) }

// TestFairResolverPauses: a port sending to its resolver without filling
// a batch is paced (fair_resolver_pauses) only while a port of another
// network forwards; alone it runs free.
func TestFairResolverPauses(t *testing.T) {
	r := New(Config{Logger: NewTestLogger(t)})
	defer r.Close()
	var local discardLocal
	if err := r.SetLocal(7, testPN(7), &local, LocalOptions{}); err != nil {
		t.Fatal(err)
	}
	flood := &resolverPort{fakePort: newFakePort(64, false), pkt: UDP4("10.240.0.2", DefaultResolver.String())}
	a, err := r.AddPort(flood, PortConfig{Network: 7, PN: testPN(7), Addr: netip.MustParseAddr("10.240.0.2"), Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "the flood to reach the resolver", func() bool {
		return local.n.Load() >= 20*fairResolverBurst
	})
	if got := a.ctr[ctrFairResolverPauses].Load(); got != 0 {
		t.Fatalf("the port paused %d times with no other network forwarding", got)
	}
	quiet := newChanPort(8)
	b, err := r.AddPort(quiet, PortConfig{Network: 8, PN: testPN(8), Addr: netip.MustParseAddr("10.240.0.3"), Name: "b"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		quiet.in <- UDP4("10.240.0.3", "10.240.0.9")
		poll.Until(t, 10*time.Second, "the quiet port's packet", func() bool {
			return b.Stats().RxPackets == uint64(i+1)
		})
	}
	poll.Until(t, 10*time.Second, "the resolver flood to pause", func() bool {
		return a.ctr[ctrFairResolverPauses].Load() > 0
	})
	if got := a.ctr[ctrFairPauses].Load(); got != 0 {
		t.Fatalf("a port that never fills a batch got %d backlog pauses", got)
	}
	if got := b.ctr[ctrFairResolverPauses].Load() + b.ctr[ctrFairPauses].Load(); got != 0 {
		t.Fatalf("the quiet port paused %d times", got)
	}
	if s := r.Stats(); s.Counters["fair_resolver_pauses"] == 0 {
		t.Fatalf("fair_resolver_pauses not in the router's counters: %v", s.Counters)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkFairResolver: the resolver pacing of a contended port's
// batch allocates nothing.
func BenchmarkFairResolver(b *testing.B) {
	p := newPacer(fairResolverRate, fairResolverBurst, 0)
	b.ReportAllocs()
	now := int64(time.Second)
	for range b.N {
		now += 1000
		p.charge(now, 8, fairMaxResolverPause)
	}
}
