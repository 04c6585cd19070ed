package stack

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// udpBufSize holds the largest datagram either side can produce (gVisor
// reassembles fragments from containers).
const udpBufSize = 65535

// udpRcvBuf is the receive buffer of a UDP flow's endpoint (datagrams from
// the container waiting for the host socket); gVisor's default is 212 KiB.
const udpRcvBuf = 64 << 10

// udpFlowCharge is what a UDP flow can hold at most, charged to the node's
// Budget: its endpoint's receive buffer and a copy buffer per direction.
const udpFlowCharge = udpRcvBuf + 2*udpBufSize

var udpBufs = sync.Pool{New: func() any {
	b := make([]byte, udpBufSize)
	return &b
}}

// udpPacket is the stack's UDP handler for datagrams no endpoint took, on
// the injecting goroutine. A datagram that opens a flow gets a gVisor
// endpoint registered on the flow's 4-tuple right here (so the flow's
// later datagrams bypass this handler and queue on it); the host socket
// and the copies run on the flow's goroutine.
//
// It replaces udp.Forwarder, which keeps a clone of each first packet that
// nothing ever releases (a leak gVisor's refs checker reports), and which
// would build an endpoint before the limits are checked.
func (e *egress) udpPacket(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
	if id.LocalAddress == e.self {
		return false // gVisor's port unreachable, as before egress
	}
	hdr := header.UDP(pkt.TransportHeader().Slice())
	if len(hdr) < header.UDPMinimumSize {
		return false
	}
	// Check the datagram before it opens a flow, as the endpoint would.
	netHdr := pkt.Network()
	lengthValid, csumValid := header.UDPValid(hdr, func() uint16 { return pkt.Data().Checksum() },
		uint16(pkt.Data().Size()), pkt.NetworkProtocolNumber,
		netHdr.SourceAddress(), netHdr.DestinationAddress(), pkt.RXChecksumValidated)
	if !lengthValid {
		e.s.stack.Stats().UDP.MalformedPacketsReceived.Increment()
		return true
	}
	if !csumValid {
		e.s.stack.Stats().UDP.ChecksumErrors.Increment()
		return true
	}
	dst := netipAddr(id.LocalAddress)
	if !e.allowedPort(dst, id.LocalPort) {
		e.stats.denied.Add(1)
		return true
	}
	client := netipAddr(id.RemoteAddress)
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return true
	}
	c := e.clientLocked(client)
	reason := ""
	if c.flows >= e.cfg.MaxFlowsPerClient {
		reason = "container_flows"
	} else {
		reason = e.acquireBudget(client, udpFlowCharge)
	}
	if reason != "" {
		e.forgetIdleLocked(client, c)
		e.mu.Unlock()
		e.stats.limited.Add(1)
		e.logRefusal("udp", reason, client, dst)
		var l4 [8]byte
		copy(l4[:], hdr[:8])
		e.refuse(client, dst, uint8(header.UDPProtocolNumber), l4)
		return true
	}
	c.flows++
	e.wg.Add(1) // for the flow's goroutine
	e.mu.Unlock()

	wq := new(waiter.Queue)
	// The endpoint queues its own clone of the packet.
	first := pkt.Clone()
	ep, terr := udp.NewForwarderRequest(e.s.stack, id, first).CreateEndpoint(wq)
	first.DecRef()
	if terr == nil {
		ep.SocketOptions().SetReceiveBufferSize(udpRcvBuf, false)
	}
	if terr != nil {
		e.releaseFlow(client, udpFlowCharge)
		e.wg.Done()
		e.log.Debug("egress: udp endpoint", "client", client, "dst", dst, "err", terr)
		return true
	}
	f := &udpFlow{
		e:      e,
		client: netip.AddrPortFrom(client, id.RemotePort),
		dst:    netip.AddrPortFrom(dst, id.LocalPort),
		ep:     ep,
		wq:     wq,
		idle:   e.udpIdleTimeout(id.LocalPort),
		start:  time.Now(),
		done:   make(chan struct{}),
	}
	e.stats.udpFlows.Add(1)
	e.stats.udpActive.Add(1)
	go f.run()
	return true
}

func (e *egress) udpIdleTimeout(dstPort uint16) time.Duration {
	switch {
	case e.cfg.UDPIdleTimeout != 0:
		return e.cfg.UDPIdleTimeout
	case dstPort == DNSPort:
		return DefaultDNSIdleTimeout
	default:
		return DefaultUDPIdleTimeout
	}
}

// udpFlow is one container address:port → destination address:port flow
// with its own connected host socket.
type udpFlow struct {
	e      *egress
	client netip.AddrPort
	dst    netip.AddrPort
	ep     tcpip.Endpoint
	wq     *waiter.Queue
	idle   time.Duration
	start  time.Time
	last   atomic.Int64 // time of the last datagram either way, since start

	mu      sync.Mutex
	host    net.Conn
	aborted bool
	done    chan struct{} // closed by abort
}

// run owns the flow: it opens the host socket, copies both ways and ends
// the flow after idle time without traffic or on close.
func (f *udpFlow) run() {
	e := f.e
	defer e.wg.Done()
	defer func() {
		f.abort()
		e.removeFlow(f)
		e.releaseFlow(f.client.Addr(), udpFlowCharge)
		e.stats.udpActive.Add(^uint64(0))
	}()
	if !e.addFlow(f) {
		return
	}
	ctx, cancel := context.WithTimeout(e.ctx, e.cfg.DialTimeout)
	conn, err := e.dial(ctx, "udp4", f.dst)
	cancel()
	if err != nil {
		e.log.Debug("egress: udp socket", "client", f.client, "dst", f.dst, "err", err)
		return
	}
	if !f.setHost(conn) {
		return
	}
	in := make(chan struct{})
	go func() {
		defer close(in)
		f.hostToContainer(conn)
	}()
	f.containerToHost(conn)
	f.abort()
	<-in
}

func (f *udpFlow) setHost(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.aborted {
		c.Close()
		return false
	}
	f.host = c
	return true
}

// abort ends the flow: it closes the endpoint (unregistering the 4-tuple)
// and the host socket, which ends both copies.
func (f *udpFlow) abort() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.aborted {
		return
	}
	f.aborted = true
	close(f.done)
	f.ep.Close()
	if f.host != nil {
		f.host.Close()
	}
}

func (f *udpFlow) touch() { f.last.Store(int64(time.Since(f.start))) }

// containerToHost forwards the container's datagrams and keeps the idle
// timer; it returns when the flow should end.
func (f *udpFlow) containerToHost(host net.Conn) {
	entry, notify := waiter.NewChannelEntry(waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr)
	f.wq.EventRegister(&entry)
	defer f.wq.EventUnregister(&entry)
	timer := time.NewTimer(f.idle)
	defer timer.Stop()
	errs := 0
	for {
		bp := udpBufs.Get().(*[]byte)
		w := tcpip.SliceWriter(*bp)
		res, terr := f.ep.Read(&w, tcpip.ReadOptions{})
		if terr == nil {
			errs = 0
			f.touch()
			_, err := host.Write((*bp)[:res.Count])
			udpBufs.Put(bp)
			// ECONNREFUSED reports an earlier ICMP error; the datagram
			// itself is lost like any other, the flow goes on.
			if err != nil && errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		udpBufs.Put(bp)
		switch terr.(type) {
		case *tcpip.ErrWouldBlock:
			select {
			case <-notify:
			case <-f.done:
				return
			case <-timer.C:
				idle := time.Since(f.start) - time.Duration(f.last.Load())
				if idle >= f.idle {
					return
				}
				timer.Reset(f.idle - idle)
			}
		case *tcpip.ErrClosedForReceive, *tcpip.ErrInvalidEndpointState, *tcpip.ErrNotConnected:
			return
		default:
			// An error the container's ICMP reported; Read consumed it.
			if errs++; errs > 8 {
				return
			}
		}
	}
}

// hostToContainer forwards the destination's datagrams to the container.
func (f *udpFlow) hostToContainer(host net.Conn) {
	sc, ok := host.(syscall.Conn)
	if !ok {
		f.abort()
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		f.abort()
		return
	}
	var r bytes.Reader
	for {
		bp, n, err := readRaw(rc, &udpBufs)
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			// The destination answered with ICMP port unreachable: tell
			// the container, so a connected socket fails as it would.
			var l4 [8]byte
			putUint16(l4[0:], f.client.Port())
			putUint16(l4[2:], f.dst.Port())
			putUint16(l4[4:], header.UDPMinimumSize)
			f.e.sendUnreachable(f.dst.Addr(), header.ICMPv4PortUnreachable, f.client.Addr(), f.dst.Addr(), uint8(header.UDPProtocolNumber), l4)
			continue
		case err != nil:
			// Closed by abort, or a socket error: the flow is over.
			f.abort()
			return
		}
		f.touch()
		r.Reset((*bp)[:n])
		_, terr := f.ep.Write(&r, tcpip.WriteOptions{})
		udpBufs.Put(bp)
		switch terr.(type) {
		case nil:
		case *tcpip.ErrClosedForSend, *tcpip.ErrInvalidEndpointState:
			return
		default:
			// A full send buffer drops the datagram, as UDP may.
		}
	}
}
