package router_test

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/internal/leaktest"
	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/stack/stacktest"
)

// fakeNAT stands in for a gateway's NAT: it answers every UDP datagram
// with its own name and the datagram, from the address it was sent to.
type fakeNAT struct {
	r    *router.Router
	vni  uint32
	name string
}

func (f *fakeNAT) Deliver(pkt []byte) {
	ip := header.IPv4(pkt)
	if ip.TransportProtocol() != header.UDPProtocolNumber {
		return
	}
	u := header.UDP(ip.Payload())
	src := netip.AddrPortFrom(netip.AddrFrom4(ip.DestinationAddress().As4()), u.DestinationPort())
	dst := netip.AddrPortFrom(netip.AddrFrom4(ip.SourceAddress().As4()), u.SourcePort())
	reply := stacktest.UDPPacket(src, dst, []byte(f.name+":"+string(u.Payload())))
	f.r.WriteLocal(f.vni, [][]byte{append(make([]byte, router.Headroom), reply...)}, router.Headroom)
}

// TestDedicatedEgress: a worker's container goes out through its app's
// gateways over the overlay: the primary takes new flows, a draining
// gateway keeps its flows while new ones go to the standby, a dead one
// loses them, no usable gateway drops (never the worker's own egress),
// and only the route's gateways may answer.
func TestDedicatedEgress(t *testing.T) {
	leaktest.Check(t)
	const (
		network   = 7
		egressVNI = router.EgressVNIBit | 900
	)
	w := newWGNode(t, "100.64.0.1")
	g1 := newWGNode(t, "100.64.0.2")
	g2 := newWGNode(t, "100.64.0.3")
	pw := w.peer()
	pw.Endpoint, pw.Keepalive = netip.AddrPort{}, false
	for _, g := range []*wgNode{g1, g2} {
		if err := g.wg.SetPeers([]router.WGPeer{pw}); err != nil {
			t.Fatal(err)
		}
		g.remote(t, egressVNI, "10.240.0.1", w)
	}
	if err := w.wg.SetPeers([]router.WGPeer{g1.peer(), g2.peer()}); err != nil {
		t.Fatal(err)
	}
	if err := g1.r.SetLocal(egressVNI, pnOf(egressVNI), &fakeNAT{r: g1.r, vni: egressVNI, name: "g1"}, router.LocalOptions{Egress: true}); err != nil {
		t.Fatal(err)
	}
	if err := g2.r.SetLocal(egressVNI, pnOf(egressVNI), &fakeNAT{r: g2.r, vni: egressVNI, name: "g2"}, router.LocalOptions{Egress: true}); err != nil {
		t.Fatal(err)
	}

	c, err := stacktest.New(stacktest.Config{Addr: netip.MustParseAddr("10.240.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	a, err := w.r.AddPort(c.Port(), router.PortConfig{Network: network, PN: pnOf(network), Addr: c.Addr(), Name: "c"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.Close()
		c.Close()
	})
	if err := w.r.SetEgressReturn(egressVNI, network, pnOf(network), []netip.Addr{g1.overlay, g2.overlay}); err != nil {
		t.Fatal(err)
	}
	route := func(g1New, g1Keep, g2New, g2Keep bool) {
		t.Helper()
		if err := a.SetEgress(&router.EgressRoute{VNI: egressVNI, Gateways: []router.EgressGateway{
			{Overlay: g1.overlay, New: g1New, Existing: g1Keep},
			{Overlay: g2.overlay, New: g2New, Existing: g2Keep},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	// The "internet" address is never reached: the fake NATs answer in
	// process.
	dst := netip.MustParseAddrPort("192.0.2.1:7")
	seq := 0
	ask := func(conn net.Conn, want string) {
		t.Helper()
		// The first datagrams may wait for the WireGuard handshake, so the
		// question is repeated; each ask has its own token, and answers to
		// earlier questions still in the socket are skipped.
		seq++
		token := fmt.Sprintf("q%d", seq)
		deadline := time.Now().Add(10 * time.Second)
		buf := make([]byte, 64)
		for {
			if _, err := conn.Write([]byte(token)); err != nil {
				t.Fatal(err)
			}
			conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			for {
				n, err := conn.Read(buf)
				if err != nil {
					break
				}
				name, tok, _ := strings.Cut(string(buf[:n]), ":")
				if tok != token {
					continue
				}
				if name != want {
					t.Fatalf("answered by %q, want %q", name, want)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("no answer (want %s); worker stats %v", want, w.r.Stats().Drops)
			}
		}
	}
	dial := func() net.Conn {
		t.Helper()
		conn, err := c.DialUDP(dst)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}

	route(true, true, true, true)
	old := dial()
	ask(old, "g1") // the primary

	route(false, true, true, true) // g1 drains
	ask(old, "g1")                 // its flow stays
	ask(dial(), "g2")              // new flows go to the standby

	route(false, false, true, true) // g1 died
	ask(old, "g2")                  // the flow is pinned again

	// Only the route's gateways may answer: g2 no longer may.
	before := w.r.Stats().Drops["forged_source"]
	if err := w.r.SetEgressReturn(egressVNI, network, pnOf(network), []netip.Addr{g1.overlay}); err != nil {
		t.Fatal(err)
	}
	old.Write([]byte("who"))
	waitStat(t, w.r, func(s router.Stats) bool { return s.Drops["forged_source"] > before })

	// No gateway: dropped, nothing through the worker.
	route(false, false, false, false)
	before = w.r.Stats().Drops["no_gateway"]
	old.Write([]byte("who"))
	waitStat(t, w.r, func(s router.Stats) bool { return s.Drops["no_gateway"] == before+1 })

	// Back to node egress: the port has no Local here, so outside_network.
	if err := a.SetEgress(nil); err != nil {
		t.Fatal(err)
	}
	if a.EgressVNI() != 0 {
		t.Fatal("EgressVNI after SetEgress(nil)")
	}
	if err := a.SetEgress(&router.EgressRoute{VNI: 1 << 24}); err == nil {
		t.Fatal("SetEgress accepted a 25-bit VNI")
	}
	if err := w.r.SetEgressReturn(egressVNI, 99, pnOf(99), []netip.Addr{g1.overlay}); err == nil {
		t.Fatal("SetEgressReturn accepted a network without ports")
	}
}

func waitStat(t *testing.T, r *router.Router, cond func(router.Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond(r.Stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out; stats %v %v", r.Stats().Counters, r.Stats().Drops)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestOverlayProbe: a node answers probes over the overlay; a closed one
// does not; probes touch no counter of the traffic balance.
func TestOverlayProbe(t *testing.T) {
	leaktest.Check(t)
	a := newWGNode(t, "100.64.0.1")
	b := newWGNode(t, "100.64.0.2")
	pa := a.peer()
	pa.Endpoint, pa.Keepalive = netip.AddrPort{}, false
	if err := b.wg.SetPeers([]router.WGPeer{pa}); err != nil {
		t.Fatal(err)
	}
	if err := a.wg.SetPeers([]router.WGPeer{b.peer()}); err != nil {
		t.Fatal(err)
	}
	if !a.r.OverlaySeen(b.overlay).IsZero() {
		t.Fatal("seen before any probe")
	}
	start := time.Now()
	deadline := start.Add(10 * time.Second)
	for a.r.OverlaySeen(b.overlay).IsZero() {
		if time.Now().After(deadline) {
			t.Fatalf("no probe answer; a %v, b %v", a.r.Stats().Counters, b.r.Stats().Counters)
		}
		a.r.ProbeOverlay([]netip.Addr{b.overlay})
		time.Sleep(50 * time.Millisecond)
	}
	if seen := a.r.OverlaySeen(b.overlay); seen.Before(start) || seen.After(time.Now()) {
		t.Fatalf("seen at %v, probing since %v", seen, start)
	}
	sa, sb := a.r.Stats(), b.r.Stats()
	if sa.Counters["probes_sent"] == 0 || sa.Counters["probe_replies"] == 0 || sb.Counters["probes_answered"] == 0 {
		t.Fatalf("probe counters: a %v, b %v", sa.Counters, sb.Counters)
	}
	if sa.Counters["rx_packets"] != 0 || sb.Counters["rx_packets"] != 0 {
		t.Fatalf("probes counted as traffic: a %v, b %v", sa.Counters, sb.Counters)
	}
	if err := a.r.SetRemote(0, pnOf(0), netip.MustParseAddr("10.240.0.1"), b.overlay); err == nil {
		t.Fatal("SetRemote accepted network 0, the probe VNI")
	}
	// b gone: its last answer stays where it was.
	b.wg.Close()
	last := a.r.OverlaySeen(b.overlay)
	for range 5 {
		a.r.ProbeOverlay([]netip.Addr{b.overlay})
		time.Sleep(20 * time.Millisecond)
	}
	if a.r.OverlaySeen(b.overlay) != last {
		t.Fatal("a closed node answered")
	}
}
