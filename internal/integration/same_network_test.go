package integration

import (
	"crypto/rand"
	"net/netip"
	"testing"
)

// TestSameNetwork: two containers of one PN reach each other with TCP
// (payload checksum compared), UDP and ping, and nothing is dropped.
func TestSameNetwork(t *testing.T) {
	tp := newTopology(t)
	// The first and the last host address of the range.
	a := tp.add(1, "10.240.0.1")
	b := tp.add(1, "10.240.3.254")
	tcpSrv := startTCPServer(t, b, 8080, "b")
	udpSrv := startUDPServer(t, b, 5353, "b")

	t.Run("tcp", func(t *testing.T) {
		data := make([]byte, 4<<20)
		rand.Read(data)
		got, err := tcpSend(a, netip.AddrPortFrom(b.Addr(), 8080), data)
		if err != nil {
			t.Fatal(err)
		}
		if want := wantAnswer("b", data); got != want {
			t.Errorf("server answered %q, want %q", got, want)
		}
		for _, c := range tcpSrv.seen() {
			if c.Addr() != a.Addr() {
				t.Errorf("server saw client %v, want %v", c, a.Addr())
			}
		}
	})
	t.Run("udp", func(t *testing.T) {
		got, err := udpRoundTrip(a, netip.AddrPortFrom(b.Addr(), 5353), "hello")
		if err != nil {
			t.Fatal(err)
		}
		if got != "b:hello" {
			t.Errorf("answer %q, want %q", got, "b:hello")
		}
		rec := udpSrv.received()
		if len(rec) != 1 || rec[0].from.Addr() != a.Addr() || rec[0].payload != "hello" {
			t.Errorf("server received %+v, want one %q from %v", rec, "hello", a.Addr())
		}
	})
	t.Run("ping", func(t *testing.T) {
		ctx, cancel := pingCtx()
		defer cancel()
		if err := a.Ping(ctx, b.Addr()); err != nil {
			t.Errorf("ping %v → %v: %v", a.Addr(), b.Addr(), err)
		}
		if err := b.Ping(ctx, a.Addr()); err != nil {
			t.Errorf("ping %v → %v: %v", b.Addr(), a.Addr(), err)
		}
	})

	s := tp.router.Stats()
	for reason, n := range s.Drops {
		if n != 0 {
			t.Errorf("drops[%s] = %d, want 0", reason, n)
		}
	}
	if s.Counters["forwarded"] == 0 {
		t.Errorf("forwarded = 0; stats %+v", s)
	}
	if a.TxDropped() != 0 || b.TxDropped() != 0 {
		t.Logf("container queues dropped %d and %d packets (TCP recovered)", a.TxDropped(), b.TxDropped())
	}
}
