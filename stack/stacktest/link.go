package stacktest

import (
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// link is gVisor's channel endpoint plus a count of the packets its full
// outbound queue dropped (channel drops them silently).
type link struct {
	*channel.Endpoint
	dropped atomic.Uint64
}

var _ stack.LinkEndpoint = (*link)(nil)

func newLink(queueLen int, mtu uint32) *link {
	// No link address: this is an L3 (TUN-like) link, so gVisor resolves
	// no neighbours. Capabilities stay 0, so the stack checks the
	// checksums of what the router hands it and computes its own.
	return &link{Endpoint: channel.New(queueLen, mtu, "")}
}

// WritePackets implements stack.LinkWriter.
func (l *link) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n, err := l.Endpoint.WritePackets(pkts)
	if err == nil && n < pkts.Len() {
		l.dropped.Add(uint64(pkts.Len() - n))
	}
	return n, err
}
