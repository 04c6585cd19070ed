package stack

import (
	"net/netip"
	"testing"

	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/stack/stacktest"
)

// FuzzDeliver feeds arbitrary bytes from a "container" into a stack that
// serves DNS: gVisor and the DNS server must take anything without
// panicking, and every packet the stack sends back must be IPv4 within the
// MTU.
func FuzzDeliver(f *testing.F) {
	src := netip.MustParseAddrPort("10.240.0.7:5353")
	dst := netip.AddrPortFrom(resolver, DNSPort)
	f.Add(stacktest.UDPPacket(src, dst, []byte{0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 'x', 0, 0, 1, 0, 1}))
	f.Add(stacktest.UDPPacket(src, dst, []byte("not dns")))
	f.Add([]byte{0x45, 0, 0, 20})
	s, err := New(Config{
		Name: "fuzz", Addr: resolver, MTU: 1390, Headroom: router.Headroom, DNS: &echoHandler{},
		Output: func(bufs [][]byte, offset int) {
			for _, b := range bufs {
				p := b[offset:]
				if len(p) < 20 || p[0]>>4 != 4 || len(p) > 1390 {
					panic("stack sent a packet that is not IPv4 within the MTU")
				}
			}
		},
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	f.Fuzz(func(t *testing.T, b []byte) {
		s.Deliver(b)
	})
}
