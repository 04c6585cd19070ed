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

// maxOutBatch bounds how many packets one WritePackets call hands to
// Output at once; gVisor rarely passes more than a TCP window's burst.
const maxOutBatch = 64

// link is the netstack's only NIC: an L3 link (no link header, no
// neighbour resolution) between the router and the stack.
//
// Inbound, deliver hands one IPv4 packet straight to the stack's
// dispatcher on the caller's goroutine (the router port's read goroutine).
// Outbound, WritePackets copies the packets into pooled buffers behind
// Headroom bytes and calls Output synchronously: unlike gVisor's channel
// endpoint there is no queue to overflow silently and no goroutine to own,
// and Output (Router.WriteLocal) never blocks for long.
type link struct {
	mtu      uint32
	headroom int
	output   func(bufs [][]byte, offset int)
	bufs     sync.Pool // *[]byte of headroom+mtu bytes

	// dispatcher is atomic rather than under a lock: gVisor calls back into
	// the link (IsAttached, WritePackets) from inside a delivery.
	dispatcher atomic.Pointer[dispatcherRef]

	outPackets, outDropped atomic.Uint64
}

var _ stack.LinkEndpoint = (*link)(nil)

func newLink(mtu uint32, headroom int, output func([][]byte, int)) *link {
	l := &link{mtu: mtu, headroom: headroom, output: output}
	size := headroom + int(mtu)
	l.bufs.New = func() any {
		b := make([]byte, size)
		return &b
	}
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

// WritePackets implements stack.LinkWriter.
func (l *link) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	var (
		arr  [maxOutBatch][]byte
		held [maxOutBatch]*[]byte
	)
	all := pkts.AsSlice()
	for start := 0; start < len(all); start += maxOutBatch {
		chunk := all[start:min(len(all), start+maxOutBatch)]
		out := arr[:0]
		for _, pkt := range chunk {
			bp := l.bufs.Get().(*[]byte)
			b := *bp
			n := l.headroom
			for _, s := range pkt.AsSlices() {
				if n+len(s) > len(b) {
					n = -1 // larger than the MTU: cannot happen without GSO
					break
				}
				n += copy(b[n:], s)
			}
			if n < 0 {
				l.bufs.Put(bp)
				l.outDropped.Add(1)
				continue
			}
			held[len(out)] = bp
			out = append(out, b[:n])
		}
		if len(out) > 0 {
			l.output(out, l.headroom)
			l.outPackets.Add(uint64(len(out)))
		}
		for i := range out {
			l.bufs.Put(held[i])
			held[i] = nil
		}
	}
	return len(all), nil
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

// Attach implements stack.NetworkLinkEndpoint.
func (l *link) Attach(d stack.NetworkDispatcher) {
	if d == nil {
		l.dispatcher.Store(nil)
		return
	}
	l.dispatcher.Store(&dispatcherRef{d: d})
}

// IsAttached implements stack.NetworkLinkEndpoint.
func (l *link) IsAttached() bool { return l.dispatcher.Load() != nil }

// Wait implements stack.NetworkLinkEndpoint: the link has no goroutine.
func (l *link) Wait() {}

// ARPHardwareType implements stack.NetworkLinkEndpoint.
func (l *link) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader implements stack.NetworkLinkEndpoint: no link header.
func (l *link) AddHeader(*stack.PacketBuffer) {}

// ParseHeader implements stack.NetworkLinkEndpoint: no link header.
func (l *link) ParseHeader(*stack.PacketBuffer) bool { return true }

// Close implements stack.NetworkLinkEndpoint: later deliveries are refused.
func (l *link) Close() { l.dispatcher.Store(nil) }

// SetOnCloseAction implements stack.NetworkLinkEndpoint.
func (l *link) SetOnCloseAction(func()) {}
