package stacktest

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

func tcpipAddr(ip netip.Addr) tcpip.Address { return tcpip.AddrFrom4(ip.As4()) }

func fullAddr(ip netip.Addr, port uint16) tcpip.FullAddress {
	return tcpip.FullAddress{NIC: nicID, Addr: tcpipAddr(ip), Port: port}
}

// DialTCP connects from the container to dst. Unlike gonet.DialContextTCP
// it keeps the cause: an ICMP host unreachable answer fails the dial at once
// with an error matching ErrHostUnreachable (syscall.EHOSTUNREACH), a RST
// with syscall.ECONNREFUSED; ctx bounds the wait otherwise.
func (c *Container) DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	return c.DialTCPFrom(ctx, 0, dst)
}

// DialTCPFrom is DialTCP from local port port (0: any), so that a test can
// reuse a port.
func (c *Container) DialTCPFrom(ctx context.Context, port uint16, dst netip.AddrPort) (net.Conn, error) {
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Source: net.TCPAddrFromAddrPort(netip.AddrPortFrom(c.addr, port)), Addr: net.TCPAddrFromAddrPort(dst), Err: err}
	}
	if c.isClosed() {
		return nil, opErr(c.errClosed("dial"))
	}
	if !dst.Addr().Is4() {
		return nil, opErr(fmt.Errorf("destination %v is not IPv4", dst.Addr()))
	}
	var wq waiter.Queue
	ep, terr := c.stack.NewEndpoint(tcp.ProtocolNumber, ipv4.ProtocolNumber, &wq)
	if terr != nil {
		return nil, opErr(netstackError(terr))
	}
	if port != 0 {
		if terr := ep.Bind(fullAddr(c.addr, port)); terr != nil {
			ep.Close()
			return nil, opErr(netstackError(terr))
		}
	}
	// Register before Connect: the handshake may finish (or fail) before
	// we would otherwise start waiting.
	entry, notify := waiter.NewChannelEntry(waiter.WritableEvents | waiter.EventErr | waiter.EventHUp)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)

	terr = ep.Connect(fullAddr(dst.Addr(), dst.Port()))
	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-ctx.Done():
			ep.Close()
			return nil, opErr(ctx.Err())
		case <-notify:
		}
		terr = ep.LastError()
	}
	if terr != nil {
		ep.Close()
		return nil, opErr(netstackError(terr))
	}
	return gonet.NewTCPConn(&wq, ep), nil
}

// ListenTCP listens on the container's address. Close the listener to
// wake a blocked Accept.
func (c *Container) ListenTCP(port uint16) (net.Listener, error) {
	if c.isClosed() {
		return nil, c.errClosed("listen tcp")
	}
	l, err := gonet.ListenTCP(c.stack, fullAddr(c.addr, port), ipv4.ProtocolNumber)
	if err != nil {
		return nil, fmt.Errorf("stacktest: listen tcp %v:%d: %w", c.addr, port, err)
	}
	return l, nil
}

// ListenUDP opens an unconnected UDP socket on the container's address.
func (c *Container) ListenUDP(port uint16) (net.PacketConn, error) {
	if c.isClosed() {
		return nil, c.errClosed("listen udp")
	}
	laddr := fullAddr(c.addr, port)
	pc, err := gonet.DialUDP(c.stack, &laddr, nil, ipv4.ProtocolNumber)
	if err != nil {
		return nil, fmt.Errorf("stacktest: listen udp %v:%d: %w", c.addr, port, err)
	}
	return pc, nil
}

// DialUDP opens a UDP socket connected to dst from an ephemeral port.
func (c *Container) DialUDP(dst netip.AddrPort) (net.Conn, error) {
	if c.isClosed() {
		return nil, c.errClosed("dial udp")
	}
	if !dst.Addr().Is4() {
		return nil, fmt.Errorf("stacktest: dial udp %v: not IPv4", dst)
	}
	raddr := fullAddr(dst.Addr(), dst.Port())
	conn, err := gonet.DialUDP(c.stack, nil, &raddr, ipv4.ProtocolNumber)
	if err != nil {
		return nil, fmt.Errorf("stacktest: dial udp %v: %w", dst, err)
	}
	return conn, nil
}
