package stack

import (
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/vrouter/vrouter/internal/offload"
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

// outQueueLarge bounds the GSO packets (up to 64 KiB each) among them:
// 4 MiB waiting per network, a window's worth at 10 Gbit/s and 3 ms.
const outQueueLarge = 64

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
//
// With GSO (outputGSO set, see GSOMaxSize) the link takes TCP packets of up
// to gsoMaxSize bytes and hands every packet to outputGSO with a
// virtio-net header in front.
type link struct {
	mtu       uint32
	headroom  int
	output    func(bufs [][]byte, offset int)
	outputGSO func(bufs [][]byte, offset int) // nil: no GSO
	bufs      sync.Pool                       // *[]byte of headroom+mtu bytes
	large     sync.Pool                       // *[]byte of headroom+gsoMaxSize bytes, with GSO

	// dispatcher is atomic rather than under a lock: gVisor calls back into
	// the link (IsAttached, WritePackets) from inside a delivery.
	dispatcher atomic.Pointer[dispatcherRef]

	outPackets, outDropped atomic.Uint64
	coalesced              atomic.Uint64 // segments delivered merged (large.go)

	qmu      sync.Mutex
	queue    []outPacket // packets for the writer
	qLarge   int         // how many of them are large
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
	buf   *[]byte
	n     int
	large bool // buf is from link.large
}

var _ stack.LinkEndpoint = (*link)(nil)

// newLink makes a link without GSO.
func newLink(mtu uint32, headroom int, output func([][]byte, int)) *link {
	return newGSOLink(mtu, headroom, output, nil)
}

// newGSOLink makes the link; outputGSO non-nil turns GSO on (headroom must
// then be at least offload.HdrLen).
func newGSOLink(mtu uint32, headroom int, output, outputGSO func([][]byte, int)) *link {
	l := &link{mtu: mtu, headroom: headroom, output: output, outputGSO: outputGSO, stopped: make(chan struct{})}
	size := headroom + int(mtu)
	l.bufs.New = func() any {
		b := make([]byte, size)
		return &b
	}
	l.large.New = func() any {
		b := make([]byte, headroom+gsoMaxSize)
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

// deliverMerged injects a packet the stack coalesced from segs segments
// (large.go); it takes v. (gVisor verifies its checksums again: a link
// that claimed RX checksum offload would skip that for every packet.)
func (l *link) deliverMerged(v *buffer.View, segs int) bool {
	ref := l.dispatcher.Load()
	if ref == nil {
		v.Release()
		return false
	}
	pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithView(v)})
	ref.d.DeliverNetworkPacket(ipv4.ProtocolNumber, pb)
	pb.DecRef()
	l.coalesced.Add(uint64(segs))
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
			size := pkt.Size()
			large := size > int(l.mtu)
			if large && (l.outputGSO == nil || pkt.GSOOptions.Type != stack.GSOTCPv4 || size > gsoMaxSize) {
				l.outDropped.Add(1) // cannot happen: only GSO packets exceed the MTU
				continue
			}
			pool := &l.bufs
			if large {
				pool = &l.large
			}
			bp := pool.Get().(*[]byte)
			n := copyPacket((*bp)[l.headroom:], pkt)
			if l.outputGSO != nil {
				putVirtioHdr((*bp)[l.headroom-offload.HdrLen:l.headroom], pkt.GSOOptions, (*bp)[l.headroom:l.headroom+n])
			}
			out = append(out, outPacket{buf: bp, n: l.headroom + n, large: large})
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
	for (len(l.queue) >= outQueueLen || l.qLarge >= outQueueLarge) && (l.state == writerRunning || l.state == writerStopping) {
		l.room.Wait()
	}
	if l.state != writerRunning && l.state != writerStopping {
		l.qmu.Unlock()
		for _, p := range ps {
			l.put(p)
		}
		l.outDropped.Add(uint64(len(ps)))
		return
	}
	wake := len(l.queue) == 0
	l.queue = append(l.queue, ps...)
	for _, p := range ps {
		if p.large {
			l.qLarge++
		}
	}
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
		out   = l.output
	)
	if l.outputGSO != nil {
		out = l.outputGSO
	}
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
		l.qLarge = 0
		l.qmu.Unlock()
		l.room.Broadcast()

		for start := 0; start < len(batch); start += maxOutBatch {
			bufs = bufs[:0]
			for _, p := range batch[start:min(len(batch), start+maxOutBatch)] {
				bufs = append(bufs, (*p.buf)[:p.n])
			}
			out(bufs, l.headroom)
			clear(bufs)
		}
		l.outPackets.Add(uint64(len(batch)))
		for i := range batch {
			l.put(batch[i])
		}
		clear(batch)
	}
}

// put returns a queued packet's buffer to its pool.
func (l *link) put(p outPacket) {
	if p.large {
		l.large.Put(p.buf)
	} else {
		l.bufs.Put(p.buf)
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

// gsoMaxSize is the largest packet the link takes with GSO: an IPv4
// packet of the largest total length. gVisor's TCP keeps its segments
// below it (payload ≤ GSOMaxSize - TCPTotalHeaderMaximumSize - 1).
const gsoMaxSize = 65535

var _ stack.GSOEndpoint = (*link)(nil)

// GSOMaxSize implements stack.GSOEndpoint.
func (l *link) GSOMaxSize() uint32 {
	if l.outputGSO == nil {
		return 0
	}
	return gsoMaxSize
}

// SupportedGSO implements stack.GSOEndpoint. With GSO, gVisor's TCP sends
// segments of up to GSOMaxSize with the checksum left to the device
// (host GSO): the router hands them to a vnet_hdr TUN whole, and the
// container's kernel does the rest. Without, stack.GSONotSupported.
func (l *link) SupportedGSO() stack.SupportedGSO {
	if l.outputGSO == nil {
		return stack.GSONotSupported
	}
	return stack.HostGSOSupported
}

// putVirtioHdr writes into h the virtio-net header of pkt, which gVisor
// sent with the GSO options o. A TCP packet with more payload than the MSS
// is a super-packet (GSO TCPv4); one with less only lacks its checksum
// (NEEDS_CSUM): gVisor left the pseudo-header sum over the whole TCP
// length in the checksum field, Linux's CHECKSUM_PARTIAL convention.
// Anything else gets a zero header: a plain packet.
func putVirtioHdr(h []byte, o stack.GSO, pkt []byte) {
	clear(h)
	if o.Type != stack.GSOTCPv4 || !o.NeedsCsum || len(pkt) < header.IPv4MinimumSize {
		return
	}
	ihl := int(header.IPv4(pkt).HeaderLength())
	if len(pkt) < ihl+header.TCPMinimumSize {
		return
	}
	thl := int(header.TCP(pkt[ihl:]).DataOffset())
	h[0] = offload.NeedsCsum
	binary.LittleEndian.PutUint16(h[6:], uint16(ihl))
	binary.LittleEndian.PutUint16(h[8:], o.CsumOffset)
	if o.MSS > 0 && len(pkt)-ihl-thl > int(o.MSS) {
		h[1] = offload.GSOTCPv4
		binary.LittleEndian.PutUint16(h[2:], uint16(ihl+thl))
		binary.LittleEndian.PutUint16(h[4:], o.MSS)
	}
}
