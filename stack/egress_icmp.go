package stack

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/net/icmp"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Ping through the node uses the kernel's unprivileged ICMP ("ping")
// sockets: socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP). The kernel allows
// them only to processes whose group id is in the range
// net.ipv4.ping_group_range (a per-network-namespace sysctl, default
// "1 0": nobody, root included). Without it every ping from a container
// goes unanswered, PingErrors counts them and one warning names the
// sysctl, e.g.
//
//	sysctl -w net.ipv4.ping_group_range="0 2147483647"
//
// The kernel replaces the echo identifier with the socket's "port"; the
// reply handed back to the container carries the container's own
// identifier and sequence number again.

// pingCharge is what a ping in flight holds at most, charged to the node's
// Budget with its ping socket: the request and the reply buffer.
const pingCharge = 2 * udpBufSize

// pingFlow makes a ping socket abortable by close.
type pingFlow struct{ pc net.PacketConn }

func (p *pingFlow) abort() { p.pc.Close() }

// icmpPacket is the stack's ICMP handler, on the injecting goroutine. Echo
// requests to other destinations than the stack's own address are sent
// from a ping socket by a goroutine; everything else is left to gVisor
// (false), which answers echo requests to its own address itself.
func (e *egress) icmpPacket(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
	if id.LocalAddress == e.self {
		return false
	}
	h := header.ICMPv4(pkt.TransportHeader().Slice())
	if len(h) < header.ICMPv4MinimumSize || h.Type() != header.ICMPv4Echo || h.Code() != 0 {
		return false
	}
	dst := netipAddr(id.LocalAddress)
	if !e.allowed(dst) {
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
	if c.pings >= maxPingsPerClient || e.pings >= maxPingsTotal {
		reason = "pings"
	} else {
		reason = e.acquireBudget(client, pingCharge)
	}
	if reason != "" {
		e.forgetIdleLocked(client, c)
		e.mu.Unlock()
		e.stats.limited.Add(1)
		e.logRefusal("icmp", reason, client, dst)
		var l4 [8]byte
		copy(l4[:], h[:8])
		e.refuse(client, dst, uint8(header.ICMPv4ProtocolNumber), l4)
		return true
	}
	c.pings++
	e.pings++
	e.wg.Add(1) // for ping
	e.mu.Unlock()

	// The ICMP header and the data, copied: gVisor reuses the packet.
	data := stack.PayloadSince(pkt.TransportHeader())
	msg := data.ToSlice()
	data.Release()
	go e.ping(client, dst, msg)
	return true
}

// ping sends one echo request from a ping socket and hands the reply back
// to the container, or gives up after DialTimeout.
func (e *egress) ping(client, dst netip.Addr, req []byte) {
	defer e.wg.Done()
	defer e.releaseBudget(client, pingCharge)
	defer func() {
		e.mu.Lock()
		e.pings--
		if c := e.clients[client]; c != nil {
			c.pings--
			e.forgetIdleLocked(client, c)
		}
		e.mu.Unlock()
	}()
	ident := header.ICMPv4(req).Ident()
	seq := header.ICMPv4(req).Sequence()

	pc, err := e.listenPing()
	if err != nil {
		e.stats.pingErrors.Add(1)
		if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) {
			if e.pingWarned.CompareAndSwap(false, true) {
				e.log.Warn("egress: pings from containers are not forwarded: this process may not open ICMP ping sockets; "+
					"add its group to the sysctl net.ipv4.ping_group_range (e.g. sysctl -w net.ipv4.ping_group_range=\"0 2147483647\")",
					"gid", os.Getgid(), "err", err)
			}
		} else {
			e.log.Debug("egress: ping socket", "err", err)
		}
		return
	}
	pf := &pingFlow{pc}
	if !e.addFlow(pf) {
		pc.Close()
		return
	}
	defer func() {
		e.removeFlow(pf)
		pc.Close()
	}()
	pc.SetDeadline(time.Now().Add(e.cfg.DialTimeout))
	if _, err := pc.WriteTo(req, &net.UDPAddr{IP: dst.AsSlice()}); err != nil {
		e.stats.pingErrors.Add(1)
		e.log.Debug("egress: ping send", "client", client, "dst", dst, "err", err)
		return
	}
	e.stats.pingsSent.Add(1)
	buf := make([]byte, len(req)+512)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return // no reply in time, or closing
		}
		r := header.ICMPv4(buf[:n])
		if n < header.ICMPv4MinimumSize || r.Type() != header.ICMPv4EchoReply || r.Sequence() != seq || !sameIP(from, dst) {
			continue
		}
		var rest [4]byte
		putUint16(rest[0:], ident)
		putUint16(rest[2:], seq)
		if e.sendICMP(dst, client, header.ICMPv4EchoReply, 0, rest, r.Payload()) {
			e.stats.pingReplies.Add(1)
		}
		return
	}
}

func sameIP(a net.Addr, ip netip.Addr) bool {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return false
	}
	got, ok := netip.AddrFromSlice(ua.IP)
	return ok && got.Unmap() == ip
}

// hostListenPing opens an unprivileged ping socket bound to Source.
func (e *egress) hostListenPing() (net.PacketConn, error) {
	src := "0.0.0.0"
	if e.cfg.Source.IsValid() {
		src = e.cfg.Source.String()
	}
	return icmp.ListenPacket("udp4", src)
}

// sendUnreachable sends the client an ICMP destination unreachable from
// from, quoting the IPv4 header of a packet client → dst of protocol proto
// and the first 8 bytes of its transport header (all a receiver needs to
// find the socket).
func (e *egress) sendUnreachable(from netip.Addr, code header.ICMPv4Code, client, dst netip.Addr, proto uint8, l4 [8]byte) {
	var quoted [header.IPv4MinimumSize + 8]byte
	ip := header.IPv4(quoted[:])
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(quoted)),
		TTL:         64,
		Protocol:    proto,
		SrcAddr:     tcpipAddr(client),
		DstAddr:     tcpipAddr(dst),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	copy(quoted[header.IPv4MinimumSize:], l4[:])
	e.sendICMP(from, client, header.ICMPv4DstUnreachable, code, [4]byte{}, quoted[:])
}

// sendICMP writes an ICMPv4 message src → dst straight to the link (the
// stack's output path), as gVisor would have sent it. rest is the second
// word of the ICMP header (ident and sequence of an echo reply). False if
// the message would not fit the MTU.
func (e *egress) sendICMP(src, dst netip.Addr, typ header.ICMPv4Type, code header.ICMPv4Code, rest [4]byte, body []byte) bool {
	l := e.s.link
	total := header.IPv4MinimumSize + header.ICMPv4MinimumSize + len(body)
	if total > int(l.mtu) {
		return false
	}
	buf := make([]byte, l.headroom+total)
	ip := header.IPv4(buf[l.headroom:])
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(total),
		Flags:       header.IPv4FlagDontFragment,
		TTL:         64,
		Protocol:    uint8(header.ICMPv4ProtocolNumber),
		SrcAddr:     tcpipAddr(src),
		DstAddr:     tcpipAddr(dst),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	m := header.ICMPv4(ip[header.IPv4MinimumSize:])
	m.SetType(typ)
	m.SetCode(code)
	copy(m[4:8], rest[:])
	copy(m[header.ICMPv4MinimumSize:], body)
	m.SetChecksum(0)
	m.SetChecksum(^checksum.Checksum(m, 0))
	l.output([][]byte{buf}, l.headroom)
	l.outPackets.Add(1)
	return true
}

func tcpipAddr(a netip.Addr) tcpip.Address { return tcpip.AddrFrom4(a.As4()) }
