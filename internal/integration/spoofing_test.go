package integration

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/poll"
	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/stack/stacktest"
)

// TestSpoofedSourceDropped: a packet whose source is not the sending port's
// address is dropped and counted; the same packet with the right source is
// delivered.
func TestSpoofedSourceDropped(t *testing.T) {
	tp := newTopology(t)
	a := tp.add(1, "10.240.0.1")
	b := tp.add(1, "10.240.0.2")
	tp.add(1, "10.240.0.3")
	srv := startUDPServer(t, b, 7000, "b")
	dst := netip.AddrPortFrom(b.Addr(), 7000)

	tests := []struct {
		name string
		src  string
	}{
		{"another container of the network", "10.240.0.3"},
		{"the destination itself", "10.240.0.2"},
		{"unused address of the range", "10.240.1.99"},
		{"outside the range", "192.168.1.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tp.router.Stats().Drops["spoofed_source"]
			spoofed := "spoofed " + tt.name
			if err := a.SendRaw(stacktest.UDPPacket(netip.AddrPortFrom(netip.MustParseAddr(tt.src), 4000), dst, []byte(spoofed))); err != nil {
				t.Fatal(err)
			}
			tp.waitStats("spoofed_source drop", func(s router.Stats) bool {
				return s.Drops["spoofed_source"] == before+1
			})

			// The same packet from the right source goes through, so the
			// source alone made the difference. It was sent after the
			// spoofed one was dropped, so its arrival also proves the
			// spoofed one is not merely late.
			legit := "legit " + tt.name
			if err := a.SendRaw(stacktest.UDPPacket(netip.AddrPortFrom(a.Addr(), 4000), dst, []byte(legit))); err != nil {
				t.Fatal(err)
			}
			poll.Until(t, 5*time.Second, "legit datagram", func() bool {
				return slices.ContainsFunc(srv.received(), func(d datagram) bool { return d.payload == legit })
			})
			for _, d := range srv.received() {
				if d.payload == spoofed {
					t.Errorf("spoofed datagram delivered: %+v", d)
				}
			}
		})
	}
}
