package stacktest

import (
	"context"
	"fmt"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/vrouter/vrouter/router"
)

// port is one handle on a container's link (see Container.Port).
type port struct {
	c *Container
	// ctx is cancelled by Close or by the container's Close.
	ctx    context.Context
	cancel context.CancelFunc
}

var _ router.Port = (*port)(nil)

// Read blocks for the first packet the stack sent, then takes whatever else
// is queued, up to len(bufs). A packet that does not fit its buffer is
// dropped and counted in TxDropped (the router sizes buffers for the MTU,
// which the stack obeys).
func (p *port) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 {
		return 0, nil
	}
	if len(sizes) < len(bufs) {
		return 0, fmt.Errorf("stacktest: read on container %v: %d sizes for %d buffers", p.c.addr, len(sizes), len(bufs))
	}
	for _, b := range bufs {
		if offset < 0 || offset > len(b) {
			return 0, fmt.Errorf("stacktest: read on container %v: offset %d outside a buffer of %d bytes", p.c.addr, offset, len(b))
		}
	}
	for {
		if p.ctx.Err() != nil {
			return 0, p.c.errClosed("read")
		}
		// ReadContext returns nil when ctx is done or when the link was
		// closed by the container's Close.
		pkt := p.c.link.ReadContext(p.ctx)
		if pkt == nil {
			return 0, p.c.errClosed("read")
		}
		n := 0
		for pkt != nil {
			if m, ok := copyPacket(bufs[n][offset:], pkt); ok {
				sizes[n] = m
				n++
			} else {
				p.c.link.dropped.Add(1)
			}
			pkt.DecRef()
			if n == len(bufs) {
				break
			}
			pkt = p.c.link.Read()
		}
		if n > 0 {
			return n, nil
		}
	}
}

// copyPacket copies pkt into dst; false if it does not fit.
func copyPacket(dst []byte, pkt *stack.PacketBuffer) (int, bool) {
	size := pkt.Size()
	if size > len(dst) {
		return 0, false
	}
	n := 0
	for _, s := range pkt.AsSlices() {
		n += copy(dst[n:], s)
	}
	return n, true
}

// Write injects each packet into the stack. The stack gets its own copy.
// Packets that are not IPv4 are skipped, as a kernel IPv4-only host would.
// It may be called concurrently.
func (p *port) Write(bufs [][]byte, offset int) (int, error) {
	if p.ctx.Err() != nil {
		return 0, p.c.errClosed("write")
	}
	c := p.c
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return 0, c.errClosed("write")
	}
	for i, b := range bufs {
		if offset < 0 || offset > len(b) {
			return i, fmt.Errorf("stacktest: write on container %v: offset %d outside a buffer of %d bytes", c.addr, offset, len(b))
		}
		pkt := b[offset:]
		if len(pkt) == 0 || header.IPVersion(pkt) != header.IPv4Version {
			continue
		}
		c.pings.observe(pkt)
		pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
		c.link.InjectInbound(ipv4.ProtocolNumber, pb)
		pb.DecRef()
	}
	return len(bufs), nil
}

// BatchSize implements router.Port.
func (p *port) BatchSize() int { return p.c.batchSize }

// Close ends this handle: a blocked Read returns os.ErrClosed, later calls
// fail. The container keeps running.
func (p *port) Close() error {
	p.cancel()
	return nil
}

// SendRaw emits pkt out of the container's link as if the stack had sent it,
// bypassing every check of the stack (for spoofing and malformed-packet
// tests). It fails with ErrNoBufferSpace when the outbound queue is full.
func (c *Container) SendRaw(pkt []byte) error {
	if c.isClosed() {
		return c.errClosed("send raw")
	}
	if len(pkt) == 0 {
		return fmt.Errorf("stacktest: send raw on container %v: empty packet", c.addr)
	}
	pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
	defer pb.DecRef()
	var list stack.PacketBufferList
	list.PushBack(pb)
	n, err := c.link.Endpoint.WritePackets(list)
	if err != nil {
		return fmt.Errorf("stacktest: send raw on container %v: %v", c.addr, err)
	}
	if n == 0 {
		return ErrNoBufferSpace
	}
	return nil
}
