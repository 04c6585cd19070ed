package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// TCP tuning of the egress stack. Both ends of a proxied connection are
// fast and near (the container over the router, the host socket), so the
// stack only has to keep up with one host's bandwidth:
//
//   - SACK on (gVisor's default, set explicitly): recovers several losses
//     per window, which matters when the router's queues drop a burst.
//
//   - Receive buffer 4 KiB…256 KiB (default)…1 MiB, send 4 KiB…1 MiB,
//     with receive-buffer moderation on (the default): idle connections
//     stay small, busy ones grow their window to what the path needs. A
//     1 MiB window is several times the path's bandwidth-delay product
//     (both ends are on this host) and bounds what a flow whose far end
//     never reads can hold: the node's Budget charges every flow this
//     worst case (tcpFlowCharge).
//
//   - reno, not cubic: gVisor's cubic has integer overflow problems on
//     long-lived fast flows (gvisor#11632); on a one-hop path the
//     congestion controller hardly matters.
//
//   - RACK off (TCPRecovery 0): RACK in gVisor causes spurious
//     retransmissions (tailscale#9707); classic dupack recovery with SACK
//     is enough here.
//
//   - TIME_WAIT 500 ms instead of 60 s (tcpTimeWait below).
//
// Buffer bounds of the egress stack's TCP endpoints (see above). The
// forwarder's receive window for new connections is the default receive
// buffer.
const (
	tcpRcvBufDefault   = 256 << 10
	tcpRcvBufMax       = 1 << 20
	tcpSndBufMax       = 1 << 20
	tcpForwarderRcvWnd = tcpRcvBufDefault
)

// tcpFlowCharge is what a proxied TCP connection can hold at most, charged
// to the node's Budget: both gVisor buffers full and a copy buffer held by a
// blocked write in each direction.
const tcpFlowCharge = tcpRcvBufMax + tcpSndBufMax + 2*copyBufSize

// tcpTimeWait is how long a proxied connection the stack closed first
// stays in TIME_WAIT. gVisor hands a new SYN that reaches a TIME_WAIT
// endpoint only to a listening endpoint on the same address and port;
// egress has none (the forwarder is a default handler), so such a SYN is
// dropped and the container's connect stalls on SYN retransmissions until
// TIME_WAIT ends. Containers do reuse those 4-tuples: Linux takes a port
// whose TIME_WAIT is older than 1 s for loopback destinations
// (tcp_tw_reuse=2), and any client wraps its port range after some
// thousands of connections to one destination. With gVisor's 60 s, a
// container opening a few hundred connections a second stalled within
// seconds (408 conn/s, timeouts, in the first bench run). TIME_WAIT guards
// against old duplicates on a long path and re-acknowledges a
// retransmitted FIN; between the container and the stack there is only
// the router, so 500 ms (more than two minimum RTOs, less than Linux's 1 s
// reuse delay) keeps the second and loses nothing to the first. A FIN
// retransmitted later gets a RST, which a socket that already closed
// ignores.
const tcpTimeWait = 500 * time.Millisecond

// Keepalive on the container side of proxied connections: a container
// that was detached never answers again, and without probes its
// connections would hold a flow slot, an endpoint and a host socket until
// the remote end gives up. Dead peers are found in idle + count×interval
// (2 min).
const (
	tcpKeepaliveIdle     = 60 * time.Second
	tcpKeepaliveInterval = 15 * time.Second
	tcpKeepaliveCount    = 4
)

// copyBufSize is the copy buffer of a proxied connection, per direction.
// Buffers come from a pool and are held only while a chunk is in transit,
// never while a connection waits for data, so idle connections cost none.
const copyBufSize = 128 << 10

var copyBufs = sync.Pool{New: func() any {
	b := make([]byte, copyBufSize)
	return &b
}}

func tuneTCP(gs *stack.Stack) error {
	sack := tcpip.TCPSACKEnabled(true)
	recovery := tcpip.TCPRecovery(0)
	cc := tcpip.CongestionControlOption("reno")
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: tcpRcvBufDefault, Max: tcpRcvBufMax}
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: tcpSndBufMax, Max: tcpSndBufMax}
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	timeWait := tcpip.TCPTimeWaitTimeoutOption(tcpTimeWait)
	for _, opt := range []tcpip.SettableTransportProtocolOption{&sack, &recovery, &cc, &rcv, &snd, &moderate, &timeWait} {
		if err := gs.SetTransportProtocolOption(tcp.ProtocolNumber, opt); err != nil {
			return fmt.Errorf("tcp option %T: %v", opt, err)
		}
	}
	return nil
}

// tcpPacket is the stack's TCP handler for segments no endpoint took. It
// runs on the injecting goroutine and decides, before the forwarder starts
// a goroutine, what a connection request gets:
//   - not a SYN, or to the stack's own address: false, so gVisor answers
//     as for any closed port (RST);
//   - a refused destination: false (RST), counted Denied;
//   - the client holds MaxFlowsPerClient flows, or the node's Budget
//     refuses it: false (RST), Limited — retrying soon would not help;
//   - too many dials in progress (client or stack): ignored, Limited —
//     the container retransmits the SYN and may get through later;
//   - a retransmission of a SYN being dialed: ignored;
//   - otherwise admitted: the forwarder runs forwardTCP.
func (e *egress) tcpPacket(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
	h := header.TCP(pkt.TransportHeader().Slice())
	if len(h) < header.TCPMinimumSize || h.Flags()&(header.TCPFlagSyn|header.TCPFlagAck|header.TCPFlagRst) != header.TCPFlagSyn {
		return false
	}
	if id.LocalAddress == e.self {
		return false
	}
	if !e.allowedPort(netipAddr(id.LocalAddress), id.LocalPort) {
		e.stats.denied.Add(1)
		return false
	}
	client := netipAddr(id.RemoteAddress)
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return true
	}
	if _, dup := e.syns[id]; dup {
		e.mu.Unlock()
		return true
	}
	c := e.clientLocked(client)
	if c.flows+c.pending >= e.cfg.MaxFlowsPerClient {
		e.forgetIdleLocked(client, c)
		e.mu.Unlock()
		e.stats.limited.Add(1)
		return false
	}
	if c.pending >= e.cfg.MaxPendingPerClient || e.pendingTotal >= e.cfg.MaxPendingDials {
		e.forgetIdleLocked(client, c)
		e.mu.Unlock()
		e.stats.limited.Add(1)
		return true
	}
	// The budget is taken for the whole life of the connection at
	// admission: the dial already holds the host socket.
	if reason := e.acquireBudget(client, tcpFlowCharge); reason != "" {
		e.forgetIdleLocked(client, c)
		e.mu.Unlock()
		e.stats.limited.Add(1)
		e.logRefusal("tcp", reason, client, netipAddr(id.LocalAddress))
		return false
	}
	c.pending++
	e.pendingTotal++
	e.syns[id] = h.SequenceNumber()
	e.wg.Add(1) // for forwardTCP
	e.mu.Unlock()
	if e.tcpFwd.HandlePacket(id, pkt) {
		return true
	}
	// The forwarder refused it (bad checksum): no handler runs, and gVisor
	// drops the malformed segment.
	e.releaseSYN(id, false)
	e.wg.Done()
	return false
}

// releaseSYN ends the admission of id, after its forwarder request was
// completed (so that a retransmitted SYN arriving in between is still
// recognised as a duplicate). established turns the pending dial into a
// flow. It returns the SYN's sequence number.
func (e *egress) releaseSYN(id stack.TransportEndpointID, established bool) uint32 {
	client := netipAddr(id.RemoteAddress)
	e.mu.Lock()
	defer e.mu.Unlock()
	seq := e.syns[id]
	delete(e.syns, id)
	e.pendingTotal--
	c := e.clients[client]
	if c == nil { // cannot happen: admission created it
		return seq
	}
	c.pending--
	if established {
		c.flows++
	} else {
		e.releaseBudget(client, tcpFlowCharge)
	}
	e.forgetIdleLocked(client, c)
	return seq
}

// forwardTCP handles one admitted SYN on a goroutine the forwarder started:
// it dials the destination first, and only on success completes the
// container's handshake and proxies the connection (DESIGN.md path 4:
// refused → RST, timeout → no answer). Complete is called exactly once on
// every path.
func (e *egress) forwardTCP(r *tcp.ForwarderRequest) {
	defer e.wg.Done()
	id := r.ID()
	dst := netip.AddrPortFrom(netipAddr(id.LocalAddress), id.LocalPort)
	e.stats.tcpDials.Add(1)
	ctx, cancel := context.WithTimeout(e.ctx, e.cfg.DialTimeout)
	conn, err := e.dial(ctx, "tcp4", dst)
	cancel()
	if err != nil {
		e.dialFailed(r, id, dst, err)
		return
	}
	host, ok := conn.(hostTCPConn)
	if !ok {
		conn.Close()
		e.stats.tcpFailed.Add(1)
		r.Complete(true)
		e.releaseSYN(id, false)
		e.log.Error("egress: dial returned an unusable connection", "type", fmt.Sprintf("%T", conn))
		return
	}

	wq := new(waiter.Queue)
	if !e.enterHandshake(wq) {
		host.Close()
		r.Complete(false)
		e.releaseSYN(id, false)
		return
	}
	ep, terr := r.CreateEndpoint(wq)
	e.leaveHandshake(wq)
	if terr != nil {
		// The container reset or vanished, or close woke us up. Nothing
		// to answer: the handshake is gone.
		host.Close()
		r.Complete(false)
		e.releaseSYN(id, false)
		e.log.Debug("egress: tcp handshake with container failed", "client", netipAddr(id.RemoteAddress), "dst", dst, "err", terr)
		return
	}
	r.Complete(false)
	e.releaseSYN(id, true)

	ep.SocketOptions().SetKeepAlive(true)
	idle := tcpip.KeepaliveIdleOption(tcpKeepaliveIdle)
	interval := tcpip.KeepaliveIntervalOption(tcpKeepaliveInterval)
	ep.SetSockOpt(&idle)
	ep.SetSockOpt(&interval)
	ep.SetSockOptInt(tcpip.KeepaliveCountOption, tcpKeepaliveCount)

	f := &tcpFlow{
		ep:   ep,
		wq:   wq,
		conn: gonet.NewTCPConn(wq, ep),
		host: host,
		done: make(chan struct{}),
	}
	client := netipAddr(id.RemoteAddress)
	if !e.addFlow(f) {
		f.abort()
		e.releaseFlow(client, tcpFlowCharge)
		return
	}
	e.stats.tcpActive.Add(1)
	f.proxy()
	e.removeFlow(f)
	e.releaseFlow(client, tcpFlowCharge)
	e.stats.tcpActive.Add(^uint64(0))
}

// dialFailed answers a SYN whose dial failed and completes its request.
func (e *egress) dialFailed(r *tcp.ForwarderRequest, id stack.TransportEndpointID, dst netip.AddrPort, err error) {
	client := netip.AddrPortFrom(netipAddr(id.RemoteAddress), id.RemotePort)
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		// What the destination said: the container sees ECONNREFUSED.
		e.stats.tcpRefused.Add(1)
		r.Complete(true)
		e.releaseSYN(id, false)
	case e.ctx.Err() != nil:
		// Closing: the stack is going away, say nothing.
		r.Complete(false)
		e.releaseSYN(id, false)
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		// The host got an ICMP error or has no route: pass it on as an
		// ICMP destination unreachable from the stack (the container's
		// gateway), so the container fails at once with EHOSTUNREACH or
		// ENETUNREACH instead of timing out. It must quote the SYN's
		// sequence number, which admission kept.
		e.stats.tcpFailed.Add(1)
		r.Complete(false)
		seq := e.releaseSYN(id, false)
		code := header.ICMPv4HostUnreachable
		if errors.Is(err, syscall.ENETUNREACH) {
			code = header.ICMPv4NetUnreachable
		}
		var l4 [8]byte
		putUint16(l4[0:], client.Port())
		putUint16(l4[2:], dst.Port())
		putUint32(l4[4:], seq)
		e.sendUnreachable(netipAddr(e.self), code, client.Addr(), dst.Addr(), uint8(header.TCPProtocolNumber), l4)
	case isTimeout(err):
		// No answer, as from the destination: the container retransmits
		// its SYN (each retransmission dials again) and finally gets
		// ETIMEDOUT, the same error it would get without the node.
		e.stats.tcpFailed.Add(1)
		r.Complete(false)
		e.releaseSYN(id, false)
	default:
		// A local failure (no free port, no file descriptor, bad source
		// address): a RST gives the application a prompt error rather
		// than a minute of retransmissions.
		e.stats.tcpFailed.Add(1)
		r.Complete(true)
		e.releaseSYN(id, false)
		// A container can cause these at will (a storm of connections
		// runs the host out of ports): rate-limited.
		e.rlog.Warn("tcp-dial-failed", "egress: tcp dial failed", "client", client, "dst", dst, "err", err)
		return
	}
	e.log.Debug("egress: tcp dial failed", "client", client, "dst", dst, "err", err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.Is(err, syscall.ETIMEDOUT) || (errors.As(err, &ne) && ne.Timeout())
}

// enterHandshake registers a handler about to block in CreateEndpoint;
// false if egress is closing.
func (e *egress) enterHandshake(wq *waiter.Queue) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return false
	}
	e.handshakes[wq] = struct{}{}
	return true
}

func (e *egress) leaveHandshake(wq *waiter.Queue) {
	e.mu.Lock()
	delete(e.handshakes, wq)
	e.mu.Unlock()
}

// hostTCPConn is what a proxied connection needs of its host socket
// (*net.TCPConn).
type hostTCPConn interface {
	net.Conn
	syscall.Conn
	CloseWrite() error
	SetLinger(sec int) error
}

// tcpFlow is one proxied connection: ep/conn towards the container, host
// towards the destination.
type tcpFlow struct {
	ep   tcpip.Endpoint
	wq   *waiter.Queue
	conn *gonet.TCPConn // writes and closes ep
	host hostTCPConn

	once sync.Once
	done chan struct{} // closed by abort or finish
}

// proxy copies both ways until both directions ended, passing a FIN on
// in each direction separately (half-close) and a reset as a reset.
func (f *tcpFlow) proxy() {
	up := make(chan struct{})
	go func() {
		defer close(up)
		f.containerToHost()
	}()
	f.hostToContainer()
	<-up
	f.finish()
}

// abort resets both sides: a RST to the container and to the destination.
func (f *tcpFlow) abort() {
	f.once.Do(func() {
		close(f.done)
		f.host.SetLinger(0)
		f.host.Close()
		f.ep.Abort()
	})
}

// finish closes both sides after both directions ended normally.
func (f *tcpFlow) finish() {
	f.once.Do(func() {
		close(f.done)
		f.host.Close()
		f.conn.Close()
	})
}

// containerToHost reads what the container sends straight from the gVisor
// endpoint (gonet's Read would hold a buffer while waiting).
func (f *tcpFlow) containerToHost() {
	entry, notify := waiter.NewChannelEntry(waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr)
	f.wq.EventRegister(&entry)
	defer f.wq.EventUnregister(&entry)
	for {
		bp := copyBufs.Get().(*[]byte)
		w := tcpip.SliceWriter(*bp)
		res, terr := f.ep.Read(&w, tcpip.ReadOptions{})
		if terr == nil {
			_, err := f.host.Write((*bp)[:res.Count])
			copyBufs.Put(bp)
			if err != nil {
				f.abort()
				return
			}
			continue
		}
		copyBufs.Put(bp)
		switch terr.(type) {
		case *tcpip.ErrWouldBlock:
			select {
			case <-notify:
			case <-f.done:
				return
			}
		case *tcpip.ErrClosedForReceive:
			// The container's FIN: pass it on, keep the other way open.
			f.host.CloseWrite()
			return
		default:
			// Reset by the container, or aborted.
			f.abort()
			return
		}
	}
}

// hostToContainer reads from the host socket when it is readable, taking a
// buffer only then.
func (f *tcpFlow) hostToContainer() {
	rc, err := f.host.SyscallConn()
	if err != nil {
		f.abort()
		return
	}
	for {
		bp, n, err := readRaw(rc, &copyBufs)
		if err != nil {
			// Reset by the destination (ECONNRESET), or aborted.
			f.abort()
			return
		}
		if n == 0 {
			copyBufs.Put(bp)
			// The destination's FIN: pass it on.
			f.conn.CloseWrite()
			return
		}
		_, err = f.conn.Write((*bp)[:n])
		copyBufs.Put(bp)
		if err != nil {
			f.abort()
			return
		}
	}
}
