package stack

import (
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/vrouter/vrouter/internal/leaktest"
	"github.com/vrouter/vrouter/internal/poll"
)

// nopDispatcher is the NIC side of a link under test: it takes nothing.
type nopDispatcher struct{}

func (nopDispatcher) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}
func (nopDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer)    {}

// outRecorder is an Output that keeps what it gets; while gate is not
// nil, it waits for it to close first.
type outRecorder struct {
	mu    sync.Mutex
	pkts  [][]byte
	calls int
	gate  chan struct{}
}

func (o *outRecorder) output(bufs [][]byte, offset int) {
	o.mu.Lock()
	gate := o.gate
	o.mu.Unlock()
	if gate != nil {
		<-gate
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls++
	for _, b := range bufs {
		o.pkts = append(o.pkts, append([]byte(nil), b[offset:]...))
	}
}

func (o *outRecorder) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.pkts)
}

// writeSeq writes n packets numbered from..from+n-1 (4 bytes each, big
// endian, after a producer byte) in one WritePackets call.
func writeSeq(t testing.TB, l *link, producer byte, from, n int) {
	t.Helper()
	var list stack.PacketBufferList
	for i := range n {
		b := make([]byte, 5)
		b[0] = producer
		binary.BigEndian.PutUint32(b[1:], uint32(from+i))
		list.PushBack(stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(b)}))
	}
	if got, err := l.WritePackets(list); err != nil || got != n {
		t.Errorf("WritePackets = %d, %v; want %d, nil", got, err, n)
	}
	list.DecRef()
}

// checkOrder checks that every producer's packets arrived complete and in
// order.
func checkOrder(t *testing.T, pkts [][]byte, want map[byte]int) {
	t.Helper()
	next := map[byte]int{}
	for _, p := range pkts {
		if len(p) != 5 {
			t.Fatalf("packet of %d bytes, want 5", len(p))
		}
		if seq := int(binary.BigEndian.Uint32(p[1:])); seq != next[p[0]] {
			t.Fatalf("producer %d: packet %d arrived where %d was due", p[0], seq, next[p[0]])
		}
		next[p[0]]++
	}
	for prod, n := range want {
		if next[prod] != n {
			t.Errorf("producer %d: %d packets arrived, want %d", prod, next[prod], n)
		}
	}
}

// TestLinkWriterOrder: packets from concurrent senders all reach Output,
// each sender's in its order, and the writer stops on Attach(nil) after
// sending what was queued.
func TestLinkWriterOrder(t *testing.T) {
	leaktest.Check(t)
	rec := &outRecorder{}
	l := newLink(1390, 16, rec.output)
	l.Attach(nopDispatcher{})
	const producers, calls, perCall = 4, 50, 7
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for c := range calls {
				writeSeq(t, l, byte(p), c*perCall, perCall)
			}
		})
	}
	wg.Wait()
	l.Attach(nil)
	l.Wait()
	want := map[byte]int{}
	for p := range producers {
		want[byte(p)] = calls * perCall
	}
	checkOrder(t, rec.pkts, want)
	if got := l.outPackets.Load(); got != producers*calls*perCall {
		t.Errorf("outPackets %d, want %d", got, producers*calls*perCall)
	}
	// After the writer is gone, packets are dropped and counted.
	writeSeq(t, l, 9, 0, 3)
	if got := l.outDropped.Load(); got != 3 {
		t.Errorf("outDropped %d after stop, want 3", got)
	}
	if n := rec.count(); n != producers*calls*perCall {
		t.Errorf("%d packets reached Output after stop", n-producers*calls*perCall)
	}
}

// TestLinkWriterBackPressure: while Output is stuck, a sender waits once
// the queue holds outQueueLen packets, and everything goes out, in order,
// once Output moves again. Nothing is dropped.
func TestLinkWriterBackPressure(t *testing.T) {
	leaktest.Check(t)
	gate := make(chan struct{})
	rec := &outRecorder{gate: gate}
	l := newLink(1390, 16, rec.output)
	l.Attach(nopDispatcher{})
	// One packet that the writer takes and holds in the stuck Output,
	// then more than the queue takes.
	writeSeq(t, l, 0, 0, 1)
	poll.Until(t, 5*time.Second, "the writer to take the first packet", func() bool {
		l.qmu.Lock()
		defer l.qmu.Unlock()
		return len(l.queue) == 0
	})
	const more = outQueueLen + maxOutBatch
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < more; i += maxOutBatch {
			writeSeq(t, l, 0, 1+i, maxOutBatch)
		}
	}()
	poll.Until(t, 5*time.Second, "the queue to fill", func() bool {
		l.qmu.Lock()
		defer l.qmu.Unlock()
		return len(l.queue) >= outQueueLen
	})
	select {
	case <-done:
		t.Fatal("the sender finished while the queue was full and Output stuck")
	default:
	}
	rec.mu.Lock()
	rec.gate = nil
	rec.mu.Unlock()
	close(gate)
	<-done
	l.Close()
	l.Wait()
	checkOrder(t, rec.pkts, map[byte]int{0: 1 + more})
	if d := l.outDropped.Load(); d != 0 {
		t.Errorf("%d packets dropped", d)
	}
}

// TestLinkNeverAttached: a link that gVisor never attached has no writer;
// Close and Wait return, and packets are dropped.
func TestLinkNeverAttached(t *testing.T) {
	leaktest.Check(t)
	rec := &outRecorder{}
	l := newLink(1390, 16, rec.output)
	writeSeq(t, l, 0, 0, 2)
	l.Close()
	l.Wait()
	l.Attach(nopDispatcher{}) // too late: stays stopped
	writeSeq(t, l, 0, 2, 1)
	if n := rec.count(); n != 0 {
		t.Errorf("%d packets reached Output", n)
	}
	if d := l.outDropped.Load(); d != 3 {
		t.Errorf("outDropped %d, want 3", d)
	}
}

// TestLinkOversize: a packet larger than the MTU (impossible without GSO)
// is dropped and counted, the others of its call go out.
func TestLinkOversize(t *testing.T) {
	leaktest.Check(t)
	rec := &outRecorder{}
	l := newLink(100, 16, rec.output)
	l.Attach(nopDispatcher{})
	var list stack.PacketBufferList
	for _, size := range []int{100, 101, 20} {
		list.PushBack(stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(make([]byte, size))}))
	}
	l.WritePackets(list)
	list.DecRef()
	l.Attach(nil)
	l.Wait()
	if n, d := rec.count(), l.outDropped.Load(); n != 2 || d != 1 {
		t.Errorf("%d sent, %d dropped; want 2 and 1", n, d)
	}
}

// BenchmarkLinkWrite measures WritePackets of one packet through the
// writer to an Output that discards it: the cost gVisor pays per packet
// sent, and the writer's hand-off.
func BenchmarkLinkWrite(b *testing.B) {
	l := newLink(1390, 16, func([][]byte, int) {})
	l.Attach(nopDispatcher{})
	defer func() {
		l.Attach(nil)
		l.Wait()
	}()
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(make([]byte, 100))})
	defer pkt.DecRef()
	var list stack.PacketBufferList
	list.PushBack(pkt)
	b.ReportAllocs()
	for b.Loop() {
		l.WritePackets(list)
	}
}
