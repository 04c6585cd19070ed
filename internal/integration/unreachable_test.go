package integration

import (
	"context"
	"errors"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/stack/stacktest"
)

// fastFail is how quickly a dial or ping to an unreachable address must
// fail: far less than a TCP SYN timeout (the first SYN retransmit alone
// comes after 1 s).
const fastFail = 2 * time.Second

// expectUnreachable checks that ping and TCP from n to dst fail fast with
// host unreachable sent by the router.
func expectUnreachable(t *testing.T, n *node, dst netip.Addr) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	start := time.Now()
	err := n.Ping(ctx, dst)
	var ue *stacktest.UnreachableError
	if !errors.As(err, &ue) {
		t.Errorf("ping %v: %v, want ICMP destination unreachable", dst, err)
	} else if ue.Code != 1 || ue.From != resolver || ue.Dst != dst {
		t.Errorf("ping %v: got %+v, want host unreachable (code 1) from %v", dst, *ue, resolver)
	}
	if d := time.Since(start); d > fastFail {
		t.Errorf("ping %v failed after %v", dst, d)
	}

	start = time.Now()
	conn, err := n.DialTCP(ctx, netip.AddrPortFrom(dst, 80))
	if err == nil {
		conn.Close()
	}
	if !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Errorf("dial %v: %v, want host unreachable", dst, err)
	}
	if d := time.Since(start); d > fastFail {
		t.Errorf("dial %v failed after %v", dst, d)
	}
}

// TestUnknownDestination: an address of the range with no container gets
// ICMP host unreachable from the resolver address back to the sender.
func TestUnknownDestination(t *testing.T) {
	tp := newTopology(t)
	a := tp.add(1, "10.240.0.1")
	before := tp.router.Stats()
	expectUnreachable(t, a, netip.MustParseAddr("10.240.2.50"))
	// The router folds a batch's counters in after its writes, so the
	// container may see the ICMP error before the counter moves: poll.
	tp.waitStats("unknown_destination and icmp_sent to grow by 2 (ping and SYN)", func(s router.Stats) bool {
		return s.Drops["unknown_destination"]-before.Drops["unknown_destination"] >= 2 &&
			s.Counters["icmp_sent"]-before.Counters["icmp_sent"] >= 2
	})
}

// TestDetachAndReattach: after its port is closed a container is
// unreachable like an unknown address; attaching it again, or another
// container with the same address, works.
func TestDetachAndReattach(t *testing.T) {
	tp := newTopology(t)
	a := tp.add(1, "10.240.0.1")
	b := tp.add(1, "10.240.0.2")
	startTCPServer(t, b, 80, "b")
	data := []byte("across a re-attach")

	reachable := func(t *testing.T, dst *node) {
		t.Helper()
		ctx, cancel := pingCtx()
		defer cancel()
		if err := a.Ping(ctx, dst.Addr()); err != nil {
			t.Errorf("ping %v: %v", dst.Addr(), err)
		}
	}
	reachable(t, b)

	b.detach()
	expectUnreachable(t, a, b.Addr())

	// The same container, a new port: its listener survived.
	b.attach(tp)
	reachable(t, b)
	got, err := tcpSend(a, netip.AddrPortFrom(b.Addr(), 80), data)
	if err != nil {
		t.Fatalf("tcp after re-attach: %v", err)
	}
	if want := wantAnswer("b", data); got != want {
		t.Errorf("answer %q, want %q", got, want)
	}

	// The address is taken while b is attached.
	c, err := stacktest.New(stacktest.Config{Addr: b.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := c.Port()
	if _, err := tp.router.AddPort(p, router.PortConfig{Network: 1, PN: netOf(1), Addr: b.Addr()}); !errors.Is(err, router.ErrAddrInUse) {
		t.Errorf("second port for %v: %v, want ErrAddrInUse", b.Addr(), err)
	}
	p.Close()

	// Another container takes the address over: it has no listener, so
	// the dial is refused by the new container rather than answered by b.
	b.detach()
	b2 := tp.add(1, b.Addr().String())
	reachable(t, b2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := a.DialTCP(ctx, netip.AddrPortFrom(b2.Addr(), 80)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial new container %v:80: %v, want connection refused", b2.Addr(), err)
	}
}
