package stacktest

import (
	"errors"
	"net/netip"
	"os"
	"sync"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/router"
)

var resolverAddr = netip.MustParseAddr("169.254.20.10")

func newContainer(t *testing.T, addr string) *Container {
	t.Helper()
	c, err := New(Config{Addr: netip.MustParseAddr(addr)})
	if err != nil {
		t.Fatalf("New(%s): %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// wire is a minimal stand-in for the router: it forwards by destination
// address between the Ports it owns and answers packets for unknown
// destinations with an ICMP host unreachable from 169.254.20.10.
type wire struct {
	t     *testing.T
	ports map[netip.Addr]router.Port
	wg    sync.WaitGroup
}

// connect starts one forwarding goroutine per container. The cleanup
// closes the ports, which ends the goroutines, and waits for them.
func connect(t *testing.T, cs ...*Container) *wire {
	t.Helper()
	w := &wire{t: t, ports: make(map[netip.Addr]router.Port)}
	for _, c := range cs {
		w.ports[c.Addr()] = c.Port()
	}
	for addr, p := range w.ports {
		w.wg.Add(1)
		go w.forward(addr, p)
	}
	t.Cleanup(func() {
		for _, p := range w.ports {
			p.Close()
		}
		w.wg.Wait()
	})
	return w
}

func (w *wire) forward(src netip.Addr, p router.Port) {
	defer w.wg.Done()
	const offset = router.Headroom
	bufs := make([][]byte, p.BatchSize())
	for i := range bufs {
		bufs[i] = make([]byte, offset+65535)
	}
	sizes := make([]int, len(bufs))
	for {
		n, err := p.Read(bufs, sizes, offset)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				w.t.Errorf("read from %v: %v", src, err)
			}
			return
		}
		for i := 0; i < n; i++ {
			pkt := bufs[i][offset : offset+sizes[i]]
			ip := header.IPv4(pkt)
			dst := netip.AddrFrom4([4]byte(ip.DestinationAddressSlice()))
			out, reply := w.ports[dst], pkt
			if out == nil {
				out, reply = p, hostUnreachable(pkt)
			}
			if reply == nil {
				continue
			}
			b := make([]byte, offset+len(reply))
			copy(b[offset:], reply)
			if _, err := out.Write([][]byte{b}, offset); err != nil && !errors.Is(err, os.ErrClosed) {
				w.t.Errorf("write to %v: %v", dst, err)
			}
		}
	}
}

// hostUnreachable builds the ICMP host unreachable the router sends for
// orig, or nil for an ICMP error (no error about an error).
func hostUnreachable(orig []byte) []byte {
	ip := header.IPv4(orig)
	if ip.Protocol() == uint8(header.ICMPv4ProtocolNumber) {
		if t := header.ICMPv4(ip.Payload()).Type(); t != header.ICMPv4Echo {
			return nil
		}
	}
	quote := orig[:min(len(orig), int(ip.HeaderLength())+8)]
	return icmpError(resolverAddr, netip.AddrFrom4([4]byte(ip.SourceAddressSlice())), header.ICMPv4HostUnreachable, quote)
}

// icmpError builds an IPv4 ICMP destination unreachable quoting quote.
func icmpError(src, dst netip.Addr, code header.ICMPv4Code, quote []byte) []byte {
	b := make([]byte, header.IPv4MinimumSize+header.ICMPv4MinimumSize+len(quote))
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)),
		TTL:         64,
		Protocol:    uint8(header.ICMPv4ProtocolNumber),
		SrcAddr:     tcpipAddr(src),
		DstAddr:     tcpipAddr(dst),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	icmp := header.ICMPv4(b[header.IPv4MinimumSize:])
	icmp.SetType(header.ICMPv4DstUnreachable)
	icmp.SetCode(code)
	copy(icmp[header.ICMPv4MinimumSize:], quote)
	icmp.SetChecksum(^checksum.Checksum(icmp, 0))
	return b
}
