package stacktest

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// pingInterval is how often Ping repeats its echo request, like ping(8), so
// that one lost packet does not turn into a timeout.
const pingInterval = 200 * time.Millisecond

// Ping sends ICMP echo requests from a gVisor ICMP endpoint to dst until a
// reply arrives (nil), an ICMP destination unreachable for one of them
// arrives (an *UnreachableError; errors.Is(err, ErrHostUnreachable) for a
// host unreachable) or ctx ends.
//
// gVisor's ICMP endpoints ignore ICMP errors, so the container watches the
// packets written to its Port for a destination unreachable quoting one of
// this Ping's requests.
func (c *Container) Ping(ctx context.Context, dst netip.Addr) error {
	if c.isClosed() {
		return c.errClosed("ping")
	}
	if !dst.Is4() {
		return fmt.Errorf("stacktest: ping %v: not IPv4", dst)
	}
	var wq waiter.Queue
	ep, terr := c.stack.NewEndpoint(icmp.ProtocolNumber4, ipv4.ProtocolNumber, &wq)
	if terr != nil {
		return fmt.Errorf("stacktest: ping %v: new endpoint: %w", dst, netstackError(terr))
	}
	conn := gonet.NewUDPConn(&wq, ep)
	if terr := ep.Connect(fullAddr(dst, 0)); terr != nil {
		conn.Close()
		return fmt.Errorf("stacktest: ping %v: connect: %w", dst, netstackError(terr))
	}
	// The endpoint's port is the echo identifier gVisor puts in requests.
	local, terr := ep.GetLocalAddress()
	if terr != nil {
		conn.Close()
		return fmt.Errorf("stacktest: ping %v: local address: %w", dst, netstackError(terr))
	}
	key := pingKey{dst: dst, ident: local.Port}
	unreachable := c.pings.watch(key)
	defer c.pings.unwatch(key)

	// The reader goroutine is owned by this call: closing conn ends it and
	// we wait for it before returning.
	replies := make(chan error, 1)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		buf := make([]byte, 65535)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				replies <- err
				return
			}
			if n >= header.ICMPv4MinimumSize && header.ICMPv4(buf[:n]).Type() == header.ICMPv4EchoReply {
				replies <- nil
				return
			}
		}
	}()
	defer func() {
		conn.Close()
		<-readerDone
	}()

	ticker := time.NewTicker(pingInterval)
	defer ticker.Stop()
	for seq := uint16(1); ; seq++ {
		if _, err := conn.Write(echoRequest(seq)); err != nil {
			return fmt.Errorf("stacktest: ping %v: send: %w", dst, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stacktest: ping %v from %v: %w", dst, c.addr, ctx.Err())
		case ue := <-unreachable:
			return fmt.Errorf("stacktest: ping %v from %v: %w", dst, c.addr, ue)
		case err := <-replies:
			if err != nil {
				return fmt.Errorf("stacktest: ping %v: read: %w", dst, err)
			}
			return nil
		case <-ticker.C:
		}
	}
}

// echoRequest builds an ICMPv4 echo request; gVisor fills in the
// identifier and the checksum.
func echoRequest(seq uint16) []byte {
	b := make([]byte, header.ICMPv4MinimumSize+16)
	h := header.ICMPv4(b)
	h.SetType(header.ICMPv4Echo)
	h.SetSequence(seq)
	copy(b[header.ICMPv4MinimumSize:], "stacktest ping!!")
	return b
}

// UnreachableError is an ICMP destination unreachable that answered one of
// a Ping's echo requests.
type UnreachableError struct {
	// From is the source of the ICMP message (the router answers from its
	// resolver address).
	From netip.Addr
	// Dst is the destination of the quoted echo request.
	Dst netip.Addr
	// Code is the ICMP code (1 = host unreachable).
	Code uint8
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("destination unreachable (code %d) for %v from %v", e.Code, e.Dst, e.From)
}

// Unwrap maps the code to the errno a kernel ping socket would report.
func (e *UnreachableError) Unwrap() error {
	switch header.ICMPv4Code(e.Code) {
	case header.ICMPv4NetUnreachable:
		return syscall.ENETUNREACH
	case header.ICMPv4HostUnreachable:
		return errHostUnreachable
	case header.ICMPv4FragmentationNeeded:
		return syscall.EMSGSIZE
	default:
		return nil
	}
}

// protoICMP is the IPv4 protocol number of ICMP.
const protoICMP = 1

type pingKey struct {
	dst   netip.Addr
	ident uint16
}

// pingWatch routes ICMP destination unreachable messages written to the
// Port to the Ping waiting for them. active keeps Port.Write from parsing
// anything when no Ping runs.
type pingWatch struct {
	active  atomic.Int32
	mu      sync.Mutex
	waiters map[pingKey]chan *UnreachableError
}

func (w *pingWatch) init() { w.waiters = make(map[pingKey]chan *UnreachableError) }

func (w *pingWatch) watch(k pingKey) <-chan *UnreachableError {
	ch := make(chan *UnreachableError, 1)
	w.mu.Lock()
	w.waiters[k] = ch
	w.mu.Unlock()
	w.active.Add(1)
	return ch
}

func (w *pingWatch) unwatch(k pingKey) {
	w.mu.Lock()
	delete(w.waiters, k)
	w.mu.Unlock()
	w.active.Add(-1)
}

// observe looks at one inbound IPv4 packet.
func (w *pingWatch) observe(pkt []byte) {
	if w.active.Load() == 0 {
		return
	}
	u, ok := parseUnreachable(pkt)
	if !ok {
		return
	}
	w.mu.Lock()
	ch := w.waiters[pingKey{dst: u.origDst, ident: u.ident}]
	w.mu.Unlock()
	if ch == nil {
		return
	}
	select {
	case ch <- &UnreachableError{From: u.from, Dst: u.origDst, Code: u.code}:
	default: // the Ping already has one
	}
}

// unreachable is an ICMPv4 destination unreachable quoting an echo request.
type unreachable struct {
	from, origSrc, origDst netip.Addr
	code                   uint8
	ident                  uint16
}

// parseUnreachable recognises an IPv4 ICMP destination unreachable whose
// quoted packet is an ICMP echo request. It reads bytes that came from
// outside the container and must never panic.
func parseUnreachable(pkt []byte) (unreachable, bool) {
	outer, ok := ipv4Payload(pkt)
	if !ok || outer.proto != protoICMP {
		return unreachable{}, false
	}
	icmpMsg := outer.payload
	if len(icmpMsg) < header.ICMPv4MinimumSize || icmpMsg[0] != byte(header.ICMPv4DstUnreachable) {
		return unreachable{}, false
	}
	// The quoted packet may be truncated to its header plus 8 bytes, so
	// its total length field is not checked against what is there.
	quoted := icmpMsg[header.ICMPv4MinimumSize:]
	if len(quoted) < header.IPv4MinimumSize || quoted[0]>>4 != 4 {
		return unreachable{}, false
	}
	ihl := int(quoted[0]&0x0f) * 4
	if ihl < header.IPv4MinimumSize || len(quoted) < ihl+header.ICMPv4MinimumSize {
		return unreachable{}, false
	}
	if quoted[9] != protoICMP || quoted[ihl] != byte(header.ICMPv4Echo) {
		return unreachable{}, false
	}
	return unreachable{
		from:    outer.src,
		origSrc: netip.AddrFrom4([4]byte(quoted[12:16])),
		origDst: netip.AddrFrom4([4]byte(quoted[16:20])),
		code:    icmpMsg[1],
		ident:   binary.BigEndian.Uint16(quoted[ihl+4 : ihl+6]),
	}, true
}

type ipv4Packet struct {
	src, dst netip.Addr
	proto    uint8
	payload  []byte
}

// ipv4Payload checks the IPv4 header and returns the payload bounded by the
// total length.
func ipv4Payload(pkt []byte) (ipv4Packet, bool) {
	if len(pkt) < header.IPv4MinimumSize || pkt[0]>>4 != 4 {
		return ipv4Packet{}, false
	}
	ihl := int(pkt[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(pkt[2:4]))
	if ihl < header.IPv4MinimumSize || total < ihl || total > len(pkt) {
		return ipv4Packet{}, false
	}
	return ipv4Packet{
		src:     netip.AddrFrom4([4]byte(pkt[12:16])),
		dst:     netip.AddrFrom4([4]byte(pkt[16:20])),
		proto:   pkt[9],
		payload: pkt[ihl:total],
	}, true
}
