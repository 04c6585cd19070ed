package router

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/leaktest"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// newInternalRouter is newTestRouter for tests inside the package.
func newInternalRouter(t *testing.T) *Router {
	t.Helper()
	leaktest.Check(t)
	r := New(Config{Logger: NewTestLogger(t)})
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Router.Close: %v", err)
		}
	})
	return r
}

func TestForwardBatching(t *testing.T) {
	r := newInternalRouter(t)
	src := newFakePort(8, true)
	d1, d2 := newFakePort(8, true), newFakePort(8, true)
	a := attachNoLoop(t, r, src, 1, "10.240.0.1", 1390)
	attachNoLoop(t, r, d1, 1, "10.240.0.2", 1390)
	attachNoLoop(t, r, d2, 1, "10.240.0.3", 1390)

	pkts := [][]byte{
		Pkt4("10.240.0.1", "10.240.0.2", PktOpts{ID: 1}),
		Pkt4("10.240.0.1", "10.240.0.3", PktOpts{ID: 2}),
		Pkt4("10.240.0.1", "10.240.0.2", PktOpts{ID: 3}),
		Pkt4("10.240.0.1", "10.240.0.4", PktOpts{ID: 4}), // unknown
		Pkt4("10.240.0.1", "10.240.0.3", PktOpts{ID: 5}),
		append(Pkt4("10.240.0.1", "10.240.0.2", PktOpts{ID: 6}), 0, 0), // padded
	}
	a.forward(load(a, pkts...), r.now())

	check := func(name string, p *fakePort, want ...[]byte) {
		t.Helper()
		if len(p.writes) != 1 {
			t.Fatalf("%s: %d Writes, want 1 for the whole batch", name, len(p.writes))
		}
		if len(p.writes[0]) != len(want) {
			t.Fatalf("%s: %d packets, want %d", name, len(p.writes[0]), len(want))
		}
		for i := range want {
			if string(p.writes[0][i]) != string(want[i]) {
				t.Errorf("%s: packet %d = % x, want % x", name, i, p.writes[0][i], want[i])
			}
		}
	}
	check("10.240.0.2", d1, pkts[0], pkts[2], pkts[5][:len(pkts[5])-2])
	check("10.240.0.3", d2, pkts[1], pkts[4])
	if len(src.writes) != 1 || len(src.writes[0]) != 1 {
		t.Fatalf("sender got %v Writes, want one with one ICMP error", src.writes)
	}
	CheckICMPUnreachable(t, src.writes[0][0], "10.240.0.1", header.ICMPv4HostUnreachable, pkts[3])
	s := r.Stats()
	if s.Counters["forwarded"] != 5 || s.Drops["unknown_destination"] != 1 || s.Counters["icmp_sent"] != 1 {
		t.Errorf("counters %v drops %v", s.Counters, s.Drops)
	}
}

func TestForwardWriteError(t *testing.T) {
	r := newInternalRouter(t)
	src := newFakePort(4, true)
	bad, good := newFakePort(4, true), newFakePort(4, true)
	bad.writeErr = errors.New("input/output error")
	a := attachNoLoop(t, r, src, 1, "10.240.0.1", 1390)
	attachNoLoop(t, r, bad, 1, "10.240.0.2", 1390)
	attachNoLoop(t, r, good, 1, "10.240.0.3", 1390)
	a.forward(load(a,
		UDP4("10.240.0.1", "10.240.0.2"),
		UDP4("10.240.0.1", "10.240.0.3"),
		UDP4("10.240.0.1", "10.240.0.2"),
	), r.now())
	s := r.Stats()
	if s.Drops["write_error"] != 2 || s.Counters["forwarded"] != 1 || len(good.writes) != 1 {
		t.Errorf("counters %v drops %v", s.Counters, s.Drops)
	}
}

// TestForwardToClosingPort: a sender that looked up a port just before it
// was detached must not write to it.
func TestForwardToClosingPort(t *testing.T) {
	r := newInternalRouter(t)
	src, dst := newFakePort(4, true), newFakePort(4, true)
	a := attachNoLoop(t, r, src, 1, "10.240.0.1", 1390)
	d := attachNoLoop(t, r, dst, 1, "10.240.0.2", 1390)
	d.closing.Store(true) // as Close does first, before the slot is cleared
	a.forward(load(a, UDP4("10.240.0.1", "10.240.0.2")), r.now())
	if len(dst.writes) != 0 {
		t.Error("wrote to a closing port")
	}
	if s := r.Stats(); s.Drops["unknown_destination"] != 1 {
		t.Errorf("drops %v", s.Drops)
	}
}

func TestForwardBadSize(t *testing.T) {
	r := newInternalRouter(t)
	a := attachNoLoop(t, r, newFakePort(2, false), 1, "10.240.0.1", 1390)
	b := batchOf(a)
	b.sizes[0], b.sizes[1] = -1, len(b.bufs[1])
	b.n = 2
	a.forward(b, r.now())
	if s := r.Stats(); s.Drops["malformed"] != 2 || s.Counters["rx_packets"] != 2 {
		t.Errorf("counters %v drops %v", s.Counters, s.Drops)
	}
}

func TestReadErrors(t *testing.T) {
	many := make([]error, maxReadErrors)
	for i := range many {
		many[i] = errTransient
	}
	tests := []struct {
		name    string
		errs    []error
		dead    bool
		wantErr error
	}{
		{"transient errors are survived", []error{errTransient, errTransient}, false, nil},
		{"persistent errors kill the port", many, true, errTransient},
		{"closed underneath kills the port at once", []error{os.ErrClosed}, true, os.ErrClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newInternalRouter(t)
			p := newErrPort(tt.errs...)
			a, err := r.AddPort(p, PortConfig{Network: 1, PN: testPN(1), Addr: AddrOf(1), Name: "errport"})
			if err != nil {
				t.Fatal(err)
			}
			// Poll: the counter is updated before the loop decides anything.
			deadline := time.Now().Add(5 * time.Second)
			for a.ctr[ctrReadErrors].Load() < uint64(len(tt.errs)) {
				if time.Now().After(deadline) {
					t.Fatalf("read_errors = %d, want %d", a.ctr[ctrReadErrors].Load(), len(tt.errs))
				}
				time.Sleep(time.Millisecond)
			}
			if tt.dead {
				select {
				case <-a.Done():
				case <-time.After(5 * time.Second):
					t.Fatal("port still running")
				}
				if !errors.Is(a.Err(), tt.wantErr) {
					t.Errorf("Err() = %v, want %v", a.Err(), tt.wantErr)
				}
			} else {
				select {
				case <-a.Done():
					t.Fatalf("port died: %v", a.Err())
				default:
				}
			}
			if err := a.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if got := r.Stats().Counters["read_errors"]; got != uint64(len(tt.errs)) {
				t.Errorf("read_errors after Close = %d, want %d", got, len(tt.errs))
			}
			if !tt.dead && a.Err() != nil {
				t.Errorf("Err() after Close = %v, want nil", a.Err())
			}
		})
	}
}

// forwardFixture is a sender and a receiver port, no read goroutines,
// with the sender's buffers holding a full batch of size-byte packets.
func forwardFixture(tb testing.TB, batch, size int) (*Router, *Attached, *fakePort) {
	r := New(Config{})
	tb.Cleanup(func() { r.Close() })
	dst := newFakePort(batch, false)
	a := attachNoLoop(tb, r, newFakePort(batch, false), 1, "10.240.0.1", 1500)
	attachNoLoop(tb, r, dst, 1, "10.240.0.2", 1500)
	pkt := Pkt4("10.240.0.1", "10.240.0.2", PktOpts{Payload: size - 28})
	pkts := make([][]byte, batch)
	for i := range pkts {
		pkts[i] = pkt
	}
	load(a, pkts...)
	return r, a, dst
}

func TestForwardAllocs(t *testing.T) {
	t.Run("forwarded", func(t *testing.T) {
		r, a, dst := forwardFixture(t, 64, 1400)
		allocs := testing.AllocsPerRun(100, func() { a.forward(batchOf(a), r.now()) })
		if allocs != 0 {
			t.Errorf("forward allocates %v times per batch of 64", allocs)
		}
		if dst.count.Load() == 0 {
			t.Error("nothing was written")
		}
	})
	t.Run("every verdict", func(t *testing.T) {
		r := New(Config{})
		t.Cleanup(func() { r.Close() })
		a := attachNoLoop(t, r, newFakePort(16, false), 1, "10.240.0.1", 1390)
		attachNoLoop(t, r, newFakePort(16, false), 1, "10.240.0.2", 1390)
		attachNoLoop(t, r, newFakePort(16, false), 1, "10.240.0.3", 576)
		n := load(a,
			UDP4("10.240.0.1", "10.240.0.2"),
			UDP4("10.240.0.1", "10.240.0.3"),
			UDP4("10.240.0.1", "10.240.0.9"),                                  // unknown: ICMP
			Pkt4("10.240.0.1", "10.240.0.3", PktOpts{Payload: 600, DF: true}), // too big: ICMP
			UDP4("10.240.0.7", "10.240.0.2"),                                  // spoofed
			UDP4("10.240.0.1", "169.254.20.10"),
			UDP4("10.240.0.1", "1.1.1.1"),
			UDP4("10.240.0.1", "10.240.3.255"),
			IPv6Pkt(),
			[]byte{0x45},
		)
		now := r.now()
		allocs := testing.AllocsPerRun(100, func() {
			now += int64(time.Second) // keep the ICMP limiter refilled
			a.forward(n, now)
		})
		if allocs != 0 {
			t.Errorf("forward allocates %v times per batch", allocs)
		}
		if s := r.Stats(); s.Counters["icmp_sent"] == 0 {
			t.Errorf("no ICMP sent: %v", s.Counters)
		}
	})
}

// BenchmarkForward measures the forwarding decision and the batched Write
// for batches of 1400-byte packets from one port to another. The ports
// are doubles (the Write discards), so no channel or syscall is timed.
func BenchmarkForward(b *testing.B) {
	for _, batch := range []int{1, 16, 128} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			const size = 1400
			r, a, _ := forwardFixture(b, batch, size)
			b.SetBytes(int64(batch * size))
			b.ReportAllocs()
			for b.Loop() {
				a.forward(batchOf(a), r.now())
			}
			b.ReportMetric(float64(b.N)*float64(batch)/b.Elapsed().Seconds(), "pkts/s")
		})
	}
}

// replayPort returns the same preloaded batch on every Read, a given number
// of times, then blocks until Close: it drives the real read loop without
// channels on the packet path.
type replayPort struct {
	pkts      [][]byte
	remaining int
	start     chan struct{} // the first Read waits for it
	drained   chan struct{}
	closed    chan struct{}
	once      sync.Once
}

func (p *replayPort) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if p.start != nil {
		<-p.start
		p.start = nil
	}
	if p.remaining == 0 {
		close(p.drained)
		<-p.closed
		return 0, os.ErrClosed
	}
	p.remaining--
	for i, pkt := range p.pkts {
		sizes[i] = copy(bufs[i][offset:], pkt)
	}
	return len(p.pkts), nil
}

func (p *replayPort) Write(bufs [][]byte, offset int) (int, error) { return len(bufs), nil }
func (p *replayPort) BatchSize() int                               { return len(p.pkts) }
func (p *replayPort) Close() error {
	p.once.Do(func() { close(p.closed) })
	return nil
}

// BenchmarkReadLoop adds the read goroutine and the copy a Read makes to
// BenchmarkForward.
func BenchmarkReadLoop(b *testing.B) {
	const batch, size = 128, 1400
	r := New(Config{})
	defer r.Close()
	dst := newFakePort(batch, false)
	if _, err := r.AddPort(dst, PortConfig{Network: 1, PN: testPN(1), Addr: AddrOf(2), MTU: 1500}); err != nil {
		b.Fatal(err)
	}
	pkt := Pkt4("10.240.0.1", "10.240.0.2", PktOpts{Payload: size - 28})
	src := &replayPort{pkts: make([][]byte, batch), remaining: b.N,
		start: make(chan struct{}), drained: make(chan struct{}), closed: make(chan struct{})}
	for i := range src.pkts {
		src.pkts[i] = pkt
	}
	b.SetBytes(batch * size)
	b.ReportAllocs()
	if _, err := r.AddPort(src, PortConfig{Network: 1, PN: testPN(1), Addr: AddrOf(1), MTU: 1500}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	close(src.start)
	<-src.drained
	b.StopTimer()
	if got := dst.count.Load(); got != int64(b.N*batch) {
		b.Fatalf("forwarded %d packets, want %d", got, b.N*batch)
	}
}

// TestHoldUnreachable: while the router holds unreachables (a restored
// worker that has not yet relearned every destination), an unknown
// destination is dropped and counted but gets no ICMP error; afterwards
// it gets one again.
func TestHoldUnreachable(t *testing.T) {
	r := newInternalRouter(t)
	src := newFakePort(8, true)
	a := attachNoLoop(t, r, src, 1, "10.240.0.1", 1390)
	unknown := Pkt4("10.240.0.1", "10.240.0.9", PktOpts{ID: 1})

	r.HoldUnreachable(time.Hour)
	a.forward(load(a, unknown), r.now())
	if len(src.writes) != 0 {
		t.Fatalf("sender got %d Writes while unreachables are held, want none", len(src.writes))
	}
	if s := r.Stats(); s.Drops["unknown_destination"] != 1 || s.Counters["icmp_sent"] != 0 {
		t.Errorf("while held: counters %v drops %v", s.Counters, s.Drops)
	}

	r.HoldUnreachable(0)
	a.forward(load(a, unknown), r.now())
	if len(src.writes) != 1 || len(src.writes[0]) != 1 {
		t.Fatalf("after the hold: sender got %v Writes, want one with one ICMP error", src.writes)
	}
	CheckICMPUnreachable(t, src.writes[0][0], "10.240.0.1", header.ICMPv4HostUnreachable, unknown)
	if s := r.Stats(); s.Drops["unknown_destination"] != 2 || s.Counters["icmp_sent"] != 1 {
		t.Errorf("after the hold: counters %v drops %v", s.Counters, s.Drops)
	}
}
