//go:build e2e

package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/poll"
)

// checkConfigured checks what `attach --netns` promises inside the
// namespace: lo up, address IP/22 on the TUN, MTU, link up, default route
// and the resolver route through the TUN.
func checkConfigured(t *testing.T, ns *netns, c container) {
	t.Helper()
	if c.Interface != defaultIfname {
		t.Errorf("container %s: interface %q, want %s", c.ID, c.Interface, defaultIfname)
	}
	lo, ok := ns.link(t, "lo")
	if !ok || !lo.up() {
		t.Errorf("%s: lo is not up: %+v", ns.name, lo)
	}
	l, ok := ns.link(t, defaultIfname)
	if !ok {
		t.Fatalf("%s: no %s after attach; links %v", ns.name, defaultIfname, ns.linkNames(t))
	}
	if !l.up() {
		t.Errorf("%s: %s is not up: flags %v", ns.name, defaultIfname, l.Flags)
	}
	if l.MTU != c.MTU {
		t.Errorf("%s: %s mtu %d, attach said %d", ns.name, defaultIfname, l.MTU, c.MTU)
	}
	found := false
	for _, a := range l.AddrInfo {
		if a.Family == "inet" && a.Local == c.IP && a.Prefixlen == privatePrefix {
			found = true
		}
	}
	if !found {
		t.Errorf("%s: %s lacks %s/%d: %+v", ns.name, defaultIfname, c.IP, privatePrefix, l.AddrInfo)
	}
	rs := ns.routes(t)
	for _, dst := range []string{"default", resolverAddr} {
		if !slices.Contains(rs, ipRoute{Dst: dst, Dev: defaultIfname}) {
			t.Errorf("%s: no route %s dev %s: %+v", ns.name, dst, defaultIfname, rs)
		}
	}
}

// TestSameNetwork: two containers of one PN reach each other with ping, TCP
// (checksum of the transferred bytes) and UDP.
func TestSameNetwork(t *testing.T) {
	need(t)
	d := startDaemon(t)
	pn, app := newID("pn"), newID("ap")
	a, b := newNetns(t), newNetns(t)
	ca := d.attach(t, a, pn, app, "web")
	cb := d.attach(t, b, pn, app, "worker")
	checkConfigured(t, a, ca)
	checkConfigured(t, b, cb)
	if ca.IP == cb.IP {
		t.Fatalf("both containers got %s", ca.IP)
	}
	if t.Failed() {
		t.FailNow()
	}

	t.Run("ping", func(t *testing.T) {
		mustPing(t, a, cb.IP)
		mustPing(t, b, ca.IP)
	})
	t.Run("tcp", func(t *testing.T) {
		tcpTransfer(t, a, b, cb.IP, 5001, 20<<20)
		tcpTransfer(t, b, a, ca.IP, 5001, 4<<20)
	})
	t.Run("udp", func(t *testing.T) {
		udpExchange(t, a, b, cb.IP, 5002)
	})
	t.Run("iperf3", func(t *testing.T) {
		iperf(t, a, b, cb.IP, 5201)
	})
	t.Run("counters", func(t *testing.T) {
		s := d.status(t)
		if s.Counters["forwarded"] == 0 {
			t.Errorf("status counters.forwarded is 0 after traffic: %v", s.Counters)
		}
		t.Logf("counters %v drops %v", s.Counters, s.Drops)
	})
}

// TestIsolation: two PNs with the very same addresses. Traffic from PN1 to
// 10.240.0.2 reaches PN1's container and never PN2's; an address that only
// PN2 has is unreachable from PN1 (ICMP host unreachable from the resolver
// address).
func TestIsolation(t *testing.T) {
	need(t)
	d := startDaemon(t)
	pn1, pn2, app1, app2 := newID("pn"), newID("pn"), newID("ap"), newID("ap")
	a, b, c, dd, e := newNetns(t), newNetns(t), newNetns(t), newNetns(t), newNetns(t)
	d.attach(t, a, pn1, app1, "web", "--ip", "10.240.0.1")
	d.attach(t, b, pn1, app1, "web", "--ip", "10.240.0.2")
	d.attach(t, c, pn2, app2, "web", "--ip", "10.240.0.1")
	d.attach(t, dd, pn2, app2, "web", "--ip", "10.240.0.2")
	d.attach(t, e, pn2, app2, "web", "--ip", "10.240.0.3") // exists only in PN2

	rx := func() map[string]uint64 {
		m := map[string]uint64{}
		for _, n := range []*netns{a, b, c, dd, e} {
			m[n.name] = n.rxPackets(t, defaultIfname)
		}
		return m
	}
	unchanged := func(before, after map[string]uint64, ns ...*netns) {
		t.Helper()
		for _, n := range ns {
			if after[n.name] != before[n.name] {
				t.Errorf("%s received %d packets it must never see", n.name, after[n.name]-before[n.name])
			}
		}
	}

	// Each phase has traffic in one PN only; the other PN's TUNs must not
	// receive a single packet. A stray packet would have been written
	// before the replies that end the phase came back.
	before := rx()
	mustPing(t, a, "10.240.0.2")
	udpExchange(t, a, b, "10.240.0.2", 5003)
	tcpTransfer(t, a, b, "10.240.0.2", 5004, 1<<20)
	after := rx()
	if after[b.name]-before[b.name] < 3 {
		t.Errorf("PN1 traffic did not reach %s: rx before %v after %v", b.name, before, after)
	}
	unchanged(before, after, c, dd, e)

	before = rx()
	mustPing(t, c, "10.240.0.2")
	tcpTransfer(t, dd, c, "10.240.0.1", 5004, 1<<20)
	after = rx()
	if after[dd.name]-before[dd.name] < 3 {
		t.Errorf("PN2 traffic did not reach %s: rx before %v after %v", dd.name, before, after)
	}
	unchanged(before, after, a, b)

	before = rx()
	out, ok := ping(t, a, "10.240.0.3", 2)
	if ok {
		t.Errorf("ping from PN1 to 10.240.0.3 (only in PN2) succeeded:\n%s", out)
	}
	if !strings.Contains(out, "From "+resolverAddr) || !strings.Contains(out, "Destination Host Unreachable") {
		t.Errorf("ping to an address with no container in the PN: want %q from %s, got:\n%s", "Destination Host Unreachable", resolverAddr, out)
	}
	after = rx()
	unchanged(before, after, b, c, dd, e)

	s := d.status(t)
	if s.Drops["unknown_destination"] == 0 {
		t.Errorf("drops.unknown_destination is 0 after pings to an unknown address: %v", s.Drops)
	}
	if s.Networks != 2 {
		t.Errorf("status networks = %d, want 2", s.Networks)
	}
}

// TestSpoofing: a packet whose source is not the port's address is dropped
// and counted as spoofed_source.
func TestSpoofing(t *testing.T) {
	need(t)
	d := startDaemon(t)
	pn, app := newID("pn"), newID("ap")
	a, b := newNetns(t), newNetns(t)
	d.attach(t, a, pn, app, "web")
	cb := d.attach(t, b, pn, app, "web")
	mustPing(t, a, cb.IP) // the path works with the real source

	spoofed := "10.240.1.99"
	a.mustRun(t, "ip", "addr", "add", spoofed+"/22", "dev", defaultIfname)
	before := d.status(t).Drops["spoofed_source"]
	rxBefore := b.rxPackets(t, defaultIfname)
	const n = 3
	out, ok := ping(t, a, cb.IP, n, "-I", spoofed)
	if ok {
		t.Fatalf("ping with spoofed source %s succeeded:\n%s", spoofed, out)
	}
	var after uint64
	poll.UntilNil(t, 5*time.Second, "drops.spoofed_source counts the spoofed pings", func() error {
		if after = d.status(t).Drops["spoofed_source"]; after < before+n {
			return fmt.Errorf("spoofed_source %d, want >= %d", after, before+n)
		}
		return nil
	})
	t.Logf("drops.spoofed_source %d -> %d after %d spoofed echo requests", before, after, n)
	if got := b.rxPackets(t, defaultIfname); got != rxBefore {
		t.Errorf("%s received %d packets from a spoofed source", b.name, got-rxBefore)
	}
	mustPing(t, a, cb.IP) // and the real source still works
}
