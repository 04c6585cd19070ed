package integration

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/stack/stacktest"
)

// TestNetworksAreIsolated: two PNs use the same addresses; each client
// reaches the server of its own PN only, and an address that exists only in
// the other PN is unreachable (fast, with ICMP) and never receives anything.
func TestNetworksAreIsolated(t *testing.T) {
	tp := newTopology(t)
	type pn struct {
		label          string
		client, server *node
		tcp            *tcpServer
		udp            *udpServer
	}
	var pns []*pn
	for _, id := range []uint32{1, 2} {
		p := &pn{
			label:  fmt.Sprintf("net-%d", id),
			client: tp.add(id, "10.240.0.1"),
			server: tp.add(id, "10.240.0.2"),
		}
		p.tcp = startTCPServer(t, p.server, 80, p.label)
		p.udp = startUDPServer(t, p.server, 53, p.label)
		pns = append(pns, p)
	}
	// 10.240.0.3 exists in net 2 only.
	only2 := tp.add(2, "10.240.0.3")
	only2UDP := startUDPServer(t, only2, 53, "only-net-2")
	only2TCP := startTCPServer(t, only2, 80, "only-net-2")
	server := netip.MustParseAddr("10.240.0.2")

	for _, p := range pns {
		t.Run(p.label, func(t *testing.T) {
			payload := "from-" + p.label
			got, err := udpRoundTrip(p.client, netip.AddrPortFrom(server, 53), payload)
			if err != nil {
				t.Fatal(err)
			}
			if want := p.label + ":" + payload; got != want {
				t.Errorf("udp answer %q, want %q", got, want)
			}
			data := []byte(strings.Repeat(payload, 1000))
			got, err = tcpSend(p.client, netip.AddrPortFrom(server, 80), data)
			if err != nil {
				t.Fatal(err)
			}
			if want := wantAnswer(p.label, data); got != want {
				t.Errorf("tcp answer %q, want %q", got, want)
			}
			ctx, cancel := pingCtx()
			defer cancel()
			if err := p.client.Ping(ctx, server); err != nil {
				t.Errorf("ping: %v", err)
			}
		})
	}
	// Each server heard its own PN's client only.
	for _, p := range pns {
		for _, d := range p.udp.received() {
			if d.payload != "from-"+p.label {
				t.Errorf("%s server received %q from %v", p.label, d.payload, d.from)
			}
		}
		if n := len(p.tcp.seen()); n != 1 {
			t.Errorf("%s tcp server saw %d clients, want 1", p.label, n)
		}
	}

	t.Run("address of the other network", func(t *testing.T) {
		client := pns[0].client // net 1
		ghost := only2.Addr()

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		_, err := client.DialTCP(ctx, netip.AddrPortFrom(ghost, 80))
		if !errors.Is(err, syscall.EHOSTUNREACH) {
			t.Errorf("dial %v from net 1: %v, want host unreachable", ghost, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("dial failed after %v, want fast failure", d)
		}
		err = client.Ping(ctx, ghost)
		var ue *stacktest.UnreachableError
		if !errors.As(err, &ue) || ue.Code != 1 || ue.From != resolver {
			t.Errorf("ping %v from net 1: %v, want host unreachable from %v", ghost, err, resolver)
		}

		// A UDP sender learns nothing; the router's verdict is final once
		// counted, so after the count nothing can arrive any more.
		before := tp.router.Stats().Drops["unknown_destination"]
		const n = 3
		for i := range n {
			if err := sendUDP(client, netip.AddrPortFrom(ghost, 53), fmt.Sprintf("leak-%d", i)); err != nil {
				t.Fatal(err)
			}
		}
		tp.waitStats("unknown_destination drops", func(s router.Stats) bool {
			return s.Drops["unknown_destination"] >= before+n
		})
		if got := only2UDP.received(); len(got) != 0 {
			t.Errorf("net 2's %v received %+v from net 1", ghost, got)
		}
		if got := only2TCP.seen(); len(got) != 0 {
			t.Errorf("net 2's %v accepted %v from net 1", ghost, got)
		}

		// Control: inside net 2 the address is alive.
		if err := pns[1].client.Ping(ctx, ghost); err != nil {
			t.Errorf("ping %v inside net 2: %v", ghost, err)
		}
	})
}

// sendUDP sends one datagram from an ephemeral port of n.
func sendUDP(n *node, dst netip.AddrPort, payload string) error {
	conn, err := n.DialUDP(dst)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(payload)); err != nil {
		return fmt.Errorf("send to %v: %w", dst, err)
	}
	return nil
}
