package stack

import (
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// maxOutBatch bounds how many packets one Output call gets.
const maxOutBatch = 64

// outQueueLen bounds the packets waiting for the writer goroutine; a
// WritePackets call beyond it waits for room (back-pressure on the sender,
// as a blocking write would be). 256 MTU-sized packets is a window of a
// few hundred KiB, enough for the writer to keep the port busy.
const outQueueLen = 256

// link is the netstack's only NIC: an L3 link (no link header, no
// neighbour resolution) between the router and the stack.
//
// Inbound, deliver hands one IPv4 packet straight to the stack's
// dispatcher on the caller's goroutine (the router port's read goroutine).
//
// Outbound, WritePackets copies the packets into pooled buffers behind
// Headroom bytes and queues them; the link's writer goroutine hands them to
// Output in batches. gVisor calls WritePackets with endpoint locks held (a
// TCP endpoint's lock while it sends a SYN-ACK, an ACK or data), and
// Output ends in a write(2) to the container's TUN: when the call waited
// for that write, gVisor's TCP processor goroutines spun on the held lock
// (tcp.processor.start requeues an endpoint whose lock it cannot take), a
// third of the daemon's CPU at a few thousand connections a second. The
// queue never drops: a full queue blocks the sender until the writer has
// taken its packets.
//
// The writer starts when gVisor attaches the link to the NIC and stops when
// the NIC is removed (Attach(nil), from Stack.Close via stack.Wait), after
// sending what was queued (the RSTs of aborted connections among it).
type link struct {
	mtu      uint32
	headroom int
	output   func(bufs [][]byte, offset int)
	bufs     sync.Pool // *[]byte of headroom+mtu bytes

	// dispatcher is atomic rather than under a lock: gVisor calls back into
	// the link (IsAttached, WritePackets) from inside a delivery.
	dispatcher atomic.Pointer[dispatcherRef]

	outPackets, outDropped atomic.Uint64

	qmu      sync.Mutex
	queue    []outPacket // packets for the writer
	work     sync.Cond   // the writer waits on it for packets or stop
	room     sync.Cond   // senders wait on it for room in queue
	state    writerState
	stopped  chan struct{} // closed when the writer has returned
	starting sync.Once
}

// writerState is the life of the writer goroutine; under qmu.
type writerState int

const (
	writerIdle     writerState = iota // not started: packets are dropped
	writerRunning                     // takes packets
	writerStopping                    // sends what is queued, then returns
	writerGone                        // returned: packets are dropped
)

// outPacket is a queued packet: (*buf)[:n], the packet at headroom.
type outPacket struct {
	buf *[]byte
	n   int
}

var _ stack.LinkEndpoint = (*link)(nil)

func newLink(mtu uint32, headroom int, output func([][]byte, int)) *link {
	l := &link{mtu: mtu, headroom: headroom, output: output, stopped: make(chan struct{})}
	size := headroom + int(mtu)
	l.bufs.New = func() any {
		b := make([]byte, size)
		return &b
	}
	l.work.L = &l.qmu
	l.room.L = &l.qmu
	return l
}

type dispatcherRef struct{ d stack.NetworkDispatcher }

// deliver injects one IPv4 packet from a container. The bytes are copied:
// gVisor keeps packets (TCP reassembly, socket queues) beyond the call.
// The caller (Stack.Deliver) keeps the stack from closing meanwhile.
func (l *link) deliver(pkt []byte) bool {
	ref := l.dispatcher.Load()
	if ref == nil {
		return false
	}
	pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
	ref.d.DeliverNetworkPacket(ipv4.ProtocolNumber, pb)
	pb.DecRef()
	return true
}

// WritePackets implements stack.LinkWriter: it copies the packets and
// queues them for the writer.
func (l *link) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	var arr [maxOutBatch]outPacket
	all := pkts.AsSlice()
	for start := 0; start < len(all); start += maxOutBatch {
		chunk := all[start:min(len(all), start+maxOutBatch)]
		out := arr[:0]
		for _, pkt := range chunk {
			if pkt.Size() > int(l.mtu) {
				l.outDropped.Add(1) // cannot happen without GSO
				continue
			}
			bp := l.bufs.Get().(*[]byte)
			n := l.headroom + copyPacket((*bp)[l.headroom:], pkt)
			out = append(out, outPacket{buf: bp, n: n})
		}
		l.enqueue(out)
		clear(out)
	}
	return len(all), nil
}

// copyPacket copies pkt into dst, which has room for it. It walks the
// packet's views (PacketBuffer.AsSlices would allocate a slice per packet).
func copyPacket(dst []byte, pkt *stack.PacketBuffer) int {
	views, skip := pkt.AsViewList()
	n := 0
	for v := views.Front(); v != nil; v = v.Next() {
		b := v.AsSlice()
		if skip >= len(b) {
			skip -= len(b)
			continue
		}
		n += copy(dst[n:], b[skip:])
		skip = 0
	}
	return n
}

// enqueue hands ps to the writer, waiting while the queue is full. Without
// a writer (not attached yet, or gone) the packets are dropped.
func (l *link) enqueue(ps []outPacket) {
	if len(ps) == 0 {
		return
	}
	l.qmu.Lock()
	for len(l.queue) >= outQueueLen && (l.state == writerRunning || l.state == writerStopping) {
		l.room.Wait()
	}
	if l.state != writerRunning && l.state != writerStopping {
		l.qmu.Unlock()
		for _, p := range ps {
			l.bufs.Put(p.buf)
		}
		l.outDropped.Add(uint64(len(ps)))
		return
	}
	wake := len(l.queue) == 0
	l.queue = append(l.queue, ps...)
	l.qmu.Unlock()
	if wake {
		l.work.Signal()
	}
}

// writeLoop is the writer goroutine: it takes everything queued at once
// and hands it to Output, until stopped with the queue empty.
func (l *link) writeLoop() {
	defer close(l.stopped)
	var (
		batch []outPacket
		bufs  = make([][]byte, 0, maxOutBatch)
	)
	for {
		l.qmu.Lock()
		for len(l.queue) == 0 && l.state == writerRunning {
			l.work.Wait()
		}
		if len(l.queue) == 0 {
			l.state = writerGone
			l.qmu.Unlock()
			l.room.Broadcast()
			return
		}
		batch, l.queue = l.queue, batch[:0]
		l.qmu.Unlock()
		l.room.Broadcast()

		for start := 0; start < len(batch); start += maxOutBatch {
			bufs = bufs[:0]
			for _, p := range batch[start:min(len(batch), start+maxOutBatch)] {
				bufs = append(bufs, (*p.buf)[:p.n])
			}
			l.output(bufs, l.headroom)
			clear(bufs)
		}
		l.outPackets.Add(uint64(len(batch)))
		for i := range batch {
			l.bufs.Put(batch[i].buf)
		}
		clear(batch)
	}
}

// startWriter starts the writer once, when gVisor first attaches the link.
func (l *link) startWriter() {
	l.starting.Do(func() {
		l.qmu.Lock()
		l.state = writerRunning
		l.qmu.Unlock()
		go l.writeLoop()
	})
}

// stopWriter makes the writer return once the queue is empty. A writer
// never started is marked gone at once (Wait returns).
func (l *link) stopWriter() {
	l.starting.Do(func() { close(l.stopped) }) // never attached: no writer
	l.qmu.Lock()
	if l.state == writerRunning {
		l.state = writerStopping
	}
	if l.state == writerIdle {
		l.state = writerGone
	}
	l.qmu.Unlock()
	l.work.Signal()
	l.room.Broadcast()
}

// MTU implements stack.NetworkLinkEndpoint.
func (l *link) MTU() uint32 { return l.mtu }

// SetMTU implements stack.NetworkLinkEndpoint; the MTU is fixed by the
// router's ports, so requests to change it are ignored.
func (l *link) SetMTU(uint32) {}

// MaxHeaderLength implements stack.NetworkLinkEndpoint: no link header.
func (l *link) MaxHeaderLength() uint16 { return 0 }

// LinkAddress implements stack.NetworkLinkEndpoint: an L3 link has none.
func (l *link) LinkAddress() tcpip.LinkAddress { return "" }

// SetLinkAddress implements stack.NetworkLinkEndpoint.
func (l *link) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities implements stack.NetworkLinkEndpoint. None: the stack
// verifies the checksums of what containers send (they are not
// authenticated) and computes its own.
func (l *link) Capabilities() stack.LinkEndpointCapabilities { return 0 }

// Attach implements stack.NetworkLinkEndpoint. A nil dispatcher means the
// NIC is being removed: the writer stops.
func (l *link) Attach(d stack.NetworkDispatcher) {
	if d == nil {
		l.dispatcher.Store(nil)
		l.stopWriter()
		return
	}
	l.dispatcher.Store(&dispatcherRef{d: d})
	l.startWriter()
}

// IsAttached implements stack.NetworkLinkEndpoint.
func (l *link) IsAttached() bool { return l.dispatcher.Load() != nil }

// Wait implements stack.NetworkLinkEndpoint: it waits for the writer,
// which Attach(nil) or Close stopped.
func (l *link) Wait() { <-l.stopped }

// ARPHardwareType implements stack.NetworkLinkEndpoint.
func (l *link) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader implements stack.NetworkLinkEndpoint: no link header.
func (l *link) AddHeader(*stack.PacketBuffer) {}

// ParseHeader implements stack.NetworkLinkEndpoint: no link header.
func (l *link) ParseHeader(*stack.PacketBuffer) bool { return true }

// Close implements stack.NetworkLinkEndpoint: later deliveries are
// refused, and the writer stops.
func (l *link) Close() {
	l.dispatcher.Store(nil)
	l.stopWriter()
}

// SetOnCloseAction implements stack.NetworkLinkEndpoint.
func (l *link) SetOnCloseAction(func()) {}
