package router_test

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/internal/leaktest"
	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/router/porttest"
)

func TestForwardSameNetwork(t *testing.T) {
	r := newTestRouter(t)
	a1, p1 := addPort(t, r, 1, "10.240.0.1")
	a2, p2 := addPort(t, r, 1, "10.240.0.2")

	pkt := router.UDP4("10.240.0.1", "10.240.0.2")
	send(t, p1, pkt)
	if got := recv(t, p2); string(got) != string(pkt) {
		t.Fatalf("delivered packet differs:\n got % x\nwant % x", got, pkt)
	}
	reply := router.UDP4("10.240.0.2", "10.240.0.1")
	send(t, p2, reply)
	if got := recv(t, p1); string(got) != string(reply) {
		t.Fatalf("reply differs")
	}
	s := router.WaitAccounted(t, r, 2)
	if s.Counters["forwarded"] != 2 || s.Counters["forwarded_bytes"] != uint64(len(pkt)+len(reply)) {
		t.Errorf("counters = %v", s.Counters)
	}
	if s.Ports != 2 || s.Networks != 1 {
		t.Errorf("Ports, Networks = %d, %d; want 2, 1", s.Ports, s.Networks)
	}
	want := router.PortStats{RxPackets: 1, RxBytes: uint64(len(pkt)), TxPackets: 1, TxBytes: uint64(len(reply))}
	if got := a1.Stats(); got != want {
		t.Errorf("a1.Stats() = %+v, want %+v", got, want)
	}
	want = router.PortStats{RxPackets: 1, RxBytes: uint64(len(reply)), TxPackets: 1, TxBytes: uint64(len(pkt))}
	if got := a2.Stats(); got != want {
		t.Errorf("a2.Stats() = %+v, want %+v", got, want)
	}
}

func TestNetworkIsolation(t *testing.T) {
	r := newTestRouter(t)
	_, n1a := addPort(t, r, 1, "10.240.0.1")
	_, n1b := addPort(t, r, 1, "10.240.0.2")
	_, n2a := addPort(t, r, 2, "10.240.0.1")
	_, n2b := addPort(t, r, 2, "10.240.0.2")

	p1 := router.UDP4("10.240.0.1", "10.240.0.2")
	send(t, n1a, p1)
	if got := recv(t, n1b); string(got) != string(p1) {
		t.Fatalf("network 1 delivery differs")
	}
	// The same packet in network 2 reaches network 2's .2 only.
	p2 := router.Pkt4("10.240.0.1", "10.240.0.2", router.PktOpts{Payload: 99})
	send(t, n2a, p2)
	if got := recv(t, n2b); string(got) != string(p2) {
		t.Fatalf("network 2 delivery differs")
	}
	router.WaitAccounted(t, r, 2)
	for name, p := range map[string]*porttest.Port{"net1 .1": n1a, "net1 .2": n1b, "net2 .1": n2a, "net2 .2": n2b} {
		expectEmpty(t, p, name)
	}
	// An address that exists only in network 2 is unknown in network 1.
	_, n2c := addPort(t, r, 2, "10.240.0.3")
	send(t, n1a, router.UDP4("10.240.0.1", "10.240.0.3"))
	router.WaitAccounted(t, r, 3)
	expectEmpty(t, n2c, "net2 .3")
	if got := recv(t, n1a); header.ICMPv4(header.IPv4(got).Payload()).Code() != header.ICMPv4HostUnreachable {
		t.Errorf("want host unreachable for an address of another network, got % x", got)
	}
}

func TestSpoofedSource(t *testing.T) {
	r := newTestRouter(t)
	a1, p1 := addPort(t, r, 1, "10.240.0.1")
	_, p2 := addPort(t, r, 1, "10.240.0.2")
	_, p3 := addPort(t, r, 1, "10.240.1.99")

	send(t, p1, router.UDP4("10.240.1.99", "10.240.0.2")) // another container's address
	send(t, p1, router.UDP4("10.240.0.5", "10.240.0.2"))
	send(t, p1, router.UDP4("192.168.1.1", "10.240.0.2"))
	s := router.WaitAccounted(t, r, 3)
	if got := s.Drops["spoofed_source"]; got != 3 {
		t.Errorf("spoofed_source = %d, want 3", got)
	}
	if got := a1.Stats().Drops; got != 3 {
		t.Errorf("port drops = %d, want 3", got)
	}
	expectEmpty(t, p2, ".2")
	expectEmpty(t, p3, ".99")
	expectEmpty(t, p1, ".1 (no ICMP for spoofed packets)")
}

func TestUnknownDestination(t *testing.T) {
	r := newTestRouter(t)
	_, p1 := addPort(t, r, 1, "10.240.0.1")
	echo := router.Pkt4("10.240.0.1", "10.240.2.7", router.PktOpts{Proto: uint8(header.ICMPv4ProtocolNumber), ICMPType: header.ICMPv4Echo, Payload: 56})
	send(t, p1, echo)
	got := recv(t, p1)
	router.CheckICMPUnreachable(t, got, "10.240.0.1", header.ICMPv4HostUnreachable, echo)
	s := router.WaitAccounted(t, r, 1)
	if s.Drops["unknown_destination"] != 1 || s.Counters["icmp_sent"] != 1 {
		t.Errorf("drops %v counters %v", s.Drops, s.Counters)
	}
	// No error about an error.
	send(t, p1, router.Pkt4("10.240.0.1", "10.240.2.7", router.PktOpts{Proto: uint8(header.ICMPv4ProtocolNumber), ICMPType: header.ICMPv4DstUnreachable, Payload: 28}))
	router.WaitAccounted(t, r, 2)
	expectEmpty(t, p1, "sender of an ICMP error")
}

func TestICMPRateLimit(t *testing.T) {
	r := newTestRouter(t)
	_, p1 := addPort(t, r, 1, "10.240.0.1")
	const n = 200
	for i := 0; i < n; i++ {
		send(t, p1, router.UDP4("10.240.0.1", "10.240.0.99"))
	}
	s := router.WaitAccounted(t, r, n)
	sent, limited := s.Counters["icmp_sent"], s.Counters["icmp_rate_limited"]
	if sent+limited != n || sent == 0 || sent >= n {
		t.Errorf("icmp_sent %d + icmp_rate_limited %d, want a limited number out of %d", sent, limited, n)
	}
}

func TestDrops(t *testing.T) {
	tests := []struct {
		name   string
		pkt    []byte
		reason string
	}{
		{"resolver", router.UDP4("10.240.0.1", "169.254.20.10"), "resolver"},
		{"outside", router.UDP4("10.240.0.1", "8.8.8.8"), "outside_network"},
		{"outside next to the range", router.UDP4("10.240.0.1", "10.240.4.1"), "outside_network"},
		{"network address", router.UDP4("10.240.0.1", "10.240.0.0"), "broadcast"},
		{"broadcast address", router.UDP4("10.240.0.1", "10.240.3.255"), "broadcast"},
		{"limited broadcast", router.UDP4("10.240.0.1", "255.255.255.255"), "broadcast"},
		{"multicast", router.UDP4("10.240.0.1", "224.0.0.251"), "broadcast"},
		{"ipv6", router.IPv6Pkt(), "not_ipv4"},
		{"garbage", []byte{0x45, 1, 2}, "malformed"},
		{"empty", []byte{}, "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newTestRouter(t)
			_, p1 := addPort(t, r, 1, "10.240.0.1")
			_, p2 := addPort(t, r, 1, "10.240.0.2")
			send(t, p1, tt.pkt)
			s := router.WaitAccounted(t, r, 1)
			for _, reason := range router.DropReasons() {
				want := uint64(0)
				if reason == tt.reason {
					want = 1
				}
				if s.Drops[reason] != want {
					t.Errorf("drops[%s] = %d, want %d", reason, s.Drops[reason], want)
				}
			}
			expectEmpty(t, p1, "sender")
			expectEmpty(t, p2, "peer")
		})
	}
}

func TestTooBig(t *testing.T) {
	r := newTestRouter(t)
	_, p1 := addPort(t, r, 1, "10.240.0.1")
	small := porttest.New(4, 1500)
	if _, err := r.AddPort(small, router.PortConfig{Network: 1, PN: pnOf(1), Addr: netip.MustParseAddr("10.240.0.2"), MTU: 1280, Name: "small"}); err != nil {
		t.Fatal(err)
	}
	big := router.Pkt4("10.240.0.1", "10.240.0.2", router.PktOpts{Payload: 1300, DF: true})
	send(t, p1, big)
	ic := router.CheckICMPUnreachable(t, recv(t, p1), "10.240.0.1", header.ICMPv4FragmentationNeeded, big)
	if ic.MTU() != 1280 {
		t.Errorf("next-hop MTU = %d, want 1280", ic.MTU())
	}
	send(t, p1, router.Pkt4("10.240.0.1", "10.240.0.2", router.PktOpts{Payload: 1300})) // no DF: dropped silently
	fits := router.Pkt4("10.240.0.1", "10.240.0.2", router.PktOpts{Payload: 1280 - 28, DF: true})
	send(t, p1, fits)
	if got := recv(t, small); string(got) != string(fits) {
		t.Errorf("packet of exactly the MTU not delivered intact")
	}
	s := router.WaitAccounted(t, r, 3)
	if s.Drops["too_big"] != 2 || s.Counters["icmp_sent"] != 1 || s.Counters["forwarded"] != 1 {
		t.Errorf("drops %v counters %v", s.Drops, s.Counters)
	}
	expectEmpty(t, p1, "sender")
	expectEmpty(t, small, "small-MTU port")
}

func TestAddPortErrors(t *testing.T) {
	r := newTestRouter(t)
	addPort(t, r, 7, "10.240.0.1")
	tests := []struct {
		name string
		cfg  router.PortConfig
		is   error
		msg  string
	}{
		{"duplicate", router.PortConfig{Network: 7, PN: pnOf(7), Addr: netip.MustParseAddr("10.240.0.1")}, router.ErrAddrInUse, "in use"},
		{"network address", router.PortConfig{Network: 7, PN: pnOf(7), Addr: netip.MustParseAddr("10.240.0.0")}, nil, "not a host address"},
		{"broadcast address", router.PortConfig{Network: 7, PN: pnOf(7), Addr: netip.MustParseAddr("10.240.3.255")}, nil, "not a host address"},
		{"outside", router.PortConfig{Network: 7, PN: pnOf(7), Addr: netip.MustParseAddr("10.0.0.1")}, nil, "not a host address"},
		{"zero address", router.PortConfig{Network: 7, PN: pnOf(7)}, nil, "not a host address"},
		{"vni too big", router.PortConfig{Network: 1 << 24, PN: pnOf(1 << 24), Addr: netip.MustParseAddr("10.240.0.5")}, nil, "24-bit"},
		{"mtu too small", router.PortConfig{Network: 7, PN: pnOf(7), Addr: netip.MustParseAddr("10.240.0.5"), MTU: 67}, nil, "MTU"},
		{"mtu too big", router.PortConfig{Network: 7, PN: pnOf(7), Addr: netip.MustParseAddr("10.240.0.5"), MTU: 65536}, nil, "MTU"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := porttest.New(1, 1500)
			tt.cfg.Name = "c-" + tt.name
			a, err := r.AddPort(p, tt.cfg)
			if err == nil {
				a.Close()
				t.Fatal("AddPort succeeded")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.msg) || !strings.Contains(err.Error(), tt.cfg.Name) {
				t.Errorf("error %q should mention %q and the port name", err, tt.msg)
			}
			if p.Closed() {
				t.Error("a rejected Port was closed")
			}
		})
	}
	if _, err := r.AddPort(nil, router.PortConfig{Addr: netip.MustParseAddr("10.240.0.9")}); err == nil {
		t.Error("AddPort(nil) succeeded")
	}
	// Same address in another network is fine.
	addPort(t, r, 8, "10.240.0.1")
	if s := r.Stats(); s.Ports != 2 || s.Networks != 2 {
		t.Errorf("Ports, Networks = %d, %d; want 2, 2", s.Ports, s.Networks)
	}
}

func TestAddressReuseAfterClose(t *testing.T) {
	r := newTestRouter(t)
	_, p1 := addPort(t, r, 1, "10.240.0.1")
	a2, p2 := addPort(t, r, 1, "10.240.0.2")
	if err := a2.Close(); err != nil {
		t.Fatal(err)
	}
	if !p2.Closed() {
		t.Error("Close did not close the Port")
	}
	if err := a2.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	select {
	case <-a2.Done():
	default:
		t.Error("Done not closed after Close")
	}
	if a2.Err() != nil {
		t.Errorf("Err after Close = %v, want nil", a2.Err())
	}
	// The address is unknown now...
	send(t, p1, router.UDP4("10.240.0.1", "10.240.0.2"))
	recv(t, p1) // host unreachable
	// ...and can be attached again.
	_, p2b := addPort(t, r, 1, "10.240.0.2")
	pkt := router.UDP4("10.240.0.1", "10.240.0.2")
	send(t, p1, pkt)
	if got := recv(t, p2b); string(got) != string(pkt) {
		t.Error("packet to the re-attached address differs")
	}
	s := router.WaitAccounted(t, r, 2)
	if s.Drops["unknown_destination"] != 1 || s.Counters["forwarded"] != 1 {
		t.Errorf("drops %v counters %v", s.Drops, s.Counters)
	}
}

func TestRouterClose(t *testing.T) {
	leaktest.Check(t)
	r := router.New(router.Config{Logger: router.NewTestLogger(t)})
	var ports []*porttest.Port
	var atts []*router.Attached
	for i := 1; i <= 5; i++ {
		a, p := addPort(t, r, uint32(i%2+1), router.AddrOf(i).String())
		ports, atts = append(ports, p), append(atts, a)
	}
	send(t, ports[0], router.UDP4("10.240.0.1", "10.240.0.3"))
	recv(t, ports[2])
	router.WaitAccounted(t, r, 1)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	for i, p := range ports {
		if !p.Closed() {
			t.Errorf("port %d not closed", i)
		}
		select {
		case <-atts[i].Done():
		default:
			t.Errorf("port %d: read loop still running", i)
		}
		if err := atts[i].Close(); err != nil {
			t.Errorf("Attached.Close after Router.Close: %v", err)
		}
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	s := r.Stats()
	if s.Ports != 0 || s.Networks != 0 || s.Counters["forwarded"] != 1 || s.Counters["rx_packets"] != 1 {
		t.Errorf("Stats after Close: %+v", s)
	}
	_, err := r.AddPort(porttest.New(1, 1500), router.PortConfig{Network: 1, PN: "pn-1", Addr: netip.MustParseAddr("10.240.0.1")})
	if !errors.Is(err, router.ErrClosed) {
		t.Errorf("AddPort after Close: %v, want ErrClosed", err)
	}
}

func TestStatsKeys(t *testing.T) {
	want := []string{"malformed", "not_ipv4", "spoofed_source", "unknown_destination", "outside_network",
		"resolver", "broadcast", "too_big", "write_error", "vxlan_malformed", "unknown_vni", "forged_source",
		"overlay_queue_full", "stack_rate_limited", "no_gateway", "return_source", "overlay_egress", "overlay_fair_share"}
	if got := router.DropReasons(); !slices.Equal(got, want) {
		t.Errorf("DropReasons() = %v, want %v", got, want)
	}
	router.DropReasons()[0] = "changed" // the caller's copy
	if router.DropReasons()[0] != "malformed" {
		t.Error("DropReasons shares its slice")
	}
	s := router.New(router.Config{}).Stats()
	if len(s.Drops) != len(want) {
		t.Errorf("Drops has %d keys, want %d", len(s.Drops), len(want))
	}
	for _, k := range want {
		if v, ok := s.Drops[k]; !ok || v != 0 {
			t.Errorf("Drops[%s] = %d, %v", k, v, ok)
		}
	}
	for _, k := range []string{"forwarded", "icmp_sent", "rx_packets", "rx_bytes", "forwarded_bytes", "read_errors",
		"to_stack", "from_stack", "from_stack_bytes", "from_stack_dropped"} {
		if _, ok := s.Counters[k]; !ok {
			t.Errorf("Counters lacks %s", k)
		}
	}
}

// TestConcurrentTraffic is meant for the race detector: ports send to each
// other while others attach and detach.
func TestConcurrentTraffic(t *testing.T) {
	r := newTestRouter(t)
	const n = 6
	ports := make([]*porttest.Port, n)
	for i := range ports {
		_, ports[i] = addPort(t, r, 1, router.AddrOf(i+1).String())
	}
	var wg sync.WaitGroup
	const perPort = 200
	for i := range ports {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := router.AddrOf(i + 1).String()
			for k := 0; k < perPort; k++ {
				dst := router.AddrOf((i+k)%(n+2) + 1).String() // includes unknown and churned addresses
				if err := ports[i].Send(router.UDP4(src, dst)); err != nil {
					t.Errorf("Send: %v", err)
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for k := 0; k < 50; k++ {
			a, err := r.AddPort(porttest.New(2, 1500), router.PortConfig{Network: 1, PN: pnOf(1), Addr: router.AddrOf(n + 1), Name: "churn"})
			if err != nil {
				t.Errorf("AddPort: %v", err)
				return
			}
			r.Stats()
			if err := a.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		}
	}()
	wg.Wait()
	s := router.WaitAccounted(t, r, n*perPort)
	if s.Counters["forwarded"] == 0 {
		t.Errorf("nothing forwarded: %v %v", s.Counters, s.Drops)
	}
	var delivered uint64
	for _, p := range ports {
		for {
			if _, err := p.Recv(canceled()); err != nil {
				break
			}
			delivered++
		}
	}
	// Every forwarded packet went to one of ports (or the churning port) and
	// every ICMP error back to a sender.
	if max := s.Counters["forwarded"] + s.Counters["icmp_sent"]; delivered > max {
		t.Errorf("delivered %d > forwarded+icmp %d", delivered, max)
	}
}

// brokenPort is a porttest.Port whose Write always fails, like a TUN whose
// namespace went away.
type brokenPort struct{ *porttest.Port }

func (brokenPort) Write([][]byte, int) (int, error) { return 0, errors.New("input/output error") }

// TestWriteErrorKeepsSenderRunning: a failing destination costs its
// packets (write_error) and nothing else.
func TestWriteErrorKeepsSenderRunning(t *testing.T) {
	r := newTestRouter(t)
	a1, p1 := addPort(t, r, 1, "10.240.0.1")
	_, p3 := addPort(t, r, 1, "10.240.0.3")
	bad := brokenPort{porttest.New(4, 1500)}
	if _, err := r.AddPort(bad, router.PortConfig{Network: 1, PN: pnOf(1), Addr: netip.MustParseAddr("10.240.0.2"), Name: "broken"}); err != nil {
		t.Fatal(err)
	}
	send(t, p1, router.UDP4("10.240.0.1", "10.240.0.2"))
	router.WaitAccounted(t, r, 1)
	pkt := router.UDP4("10.240.0.1", "10.240.0.3")
	send(t, p1, pkt)
	if got := recv(t, p3); string(got) != string(pkt) {
		t.Error("packet after a write error differs")
	}
	s := router.WaitAccounted(t, r, 2)
	if s.Drops["write_error"] != 1 || s.Counters["forwarded"] != 1 {
		t.Errorf("counters %v drops %v", s.Counters, s.Drops)
	}
	select {
	case <-a1.Done():
		t.Errorf("sender's read loop ended: %v", a1.Err())
	default:
	}
}

// TestAfterDone: the callback runs once the port's read loop has ended,
// whether the port died or was closed, and also when it is registered
// after the end.
func TestAfterDone(t *testing.T) {
	r := newTestRouter(t)
	wait := func(ch <-chan error) error {
		t.Helper()
		select {
		case err := <-ch:
			return err
		case <-time.After(5 * time.Second):
			t.Fatal("AfterDone callback did not run")
			return nil
		}
	}
	register := func(a *router.Attached) <-chan error {
		ch := make(chan error, 2)
		a.AfterDone(func() {
			select {
			case <-a.Done():
			default:
				t.Error("callback ran before Done was closed")
			}
			ch <- a.Err()
		})
		return ch
	}

	// Died: the Port fails under the router.
	a1, p1 := addPort(t, r, 1, "10.240.0.1")
	died := register(a1)
	p1.Close()
	if err := wait(died); err == nil {
		t.Error("Err in the callback of a dead port = nil")
	}

	// Closed by its owner: Err is nil, and a replaced callback never runs.
	a2, _ := addPort(t, r, 1, "10.240.0.2")
	replaced := register(a2)
	closed := register(a2)
	if err := a2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := wait(closed); err != nil {
		t.Errorf("Err in the callback of a closed port = %v", err)
	}
	select {
	case <-replaced:
		t.Error("a replaced callback ran")
	case <-time.After(50 * time.Millisecond):
	}

	// Registered after the end: runs at once.
	if err := wait(register(a2)); err != nil {
		t.Errorf("late callback: Err = %v", err)
	}
	if err := wait(register(a1)); err == nil {
		t.Error("late callback of a dead port: Err = nil")
	}
}
