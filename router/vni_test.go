package router

import (
	"errors"
	"net/netip"
	"testing"
)

func TestVNIHalves(t *testing.T) {
	for _, tc := range []struct {
		vni             uint32
		network, egress bool
	}{
		{0, false, false}, // overlay probes
		{1, true, false},
		{EgressVNIBit - 1, true, false},
		{EgressVNIBit, false, true},
		{MaxVNI, false, true},
		{MaxVNI + 1, false, false},
	} {
		if got := IsNetworkVNI(tc.vni); got != tc.network {
			t.Errorf("IsNetworkVNI(%#x) = %v", tc.vni, got)
		}
		if got := IsEgressVNI(tc.vni); got != tc.egress {
			t.Errorf("IsEgressVNI(%#x) = %v", tc.vni, got)
		}
	}
}

// TestVNIOwner: the first network to use a VNI owns its table; a port, a
// remote entry, a Local or an egress return of another network for that
// VNI is refused and counted, and changes nothing; once the table is gone
// the VNI is free for another network.
func TestVNIOwner(t *testing.T) {
	r := New(Config{})
	t.Cleanup(func() { r.Close() })
	node := netip.AddrFrom4(testNodeB)
	refused := func() uint64 { return r.Stats().Counters["vni_owner_refused"] }
	a := attachNoLoop(t, r, newFakePort(1, false), 7, "10.240.0.1", 1390)
	if err := r.SetRemote(7, "pn-a", netip.MustParseAddr("10.240.0.2"), node); err == nil || !errors.Is(err, ErrVNIOwned) {
		t.Fatalf("SetRemote of another network: %v, want ErrVNIOwned", err)
	}
	if _, err := r.attach(newFakePort(1, false), PortConfig{Network: 7, PN: "pn-a", Addr: netip.MustParseAddr("10.240.0.3")}); !errors.Is(err, ErrVNIOwned) {
		t.Fatalf("AddPort of another network: %v, want ErrVNIOwned", err)
	}
	l := &countLocal{}
	if err := r.SetLocal(7, "pn-a", l, LocalOptions{Egress: true}); !errors.Is(err, ErrVNIOwned) {
		t.Fatalf("SetLocal of another network: %v, want ErrVNIOwned", err)
	}
	if err := r.SetEgressReturn(EgressVNIBit|5, 7, "pn-a", []netip.Addr{node}); !errors.Is(err, ErrVNIOwned) {
		t.Fatalf("SetEgressReturn for another network: %v, want ErrVNIOwned", err)
	}
	if got := refused(); got != 4 {
		t.Errorf("vni_owner_refused = %d, want 4", got)
	}
	tb := r.state.networks[7]
	if tb.owner != testPN(7) || tb.remotes != 0 || tb.ports != 1 || tb.local.Load() != nil || len(*r.returns.Load()) != 0 {
		t.Fatalf("the refusals changed the table: owner %q remotes %d ports %d", tb.owner, tb.remotes, tb.ports)
	}
	if got := r.VNIOwner(7); got != testPN(7) {
		t.Errorf("VNIOwner(7) = %q", got)
	}

	// Removing in another network's name does not touch the owner's entries.
	if err := r.SetRemote(7, testPN(7), netip.MustParseAddr("10.240.0.2"), node); err != nil {
		t.Fatal(err)
	}
	if err := r.SetLocal(7, testPN(7), l, LocalOptions{}); err != nil {
		t.Fatal(err)
	}
	r.RemoveRemote(7, "pn-a", netip.MustParseAddr("10.240.0.2"))
	if err := r.SetLocal(7, "pn-a", nil, LocalOptions{}); err != nil {
		t.Fatal(err)
	}
	if tb.remotes != 1 || tb.local.Load() == nil {
		t.Fatalf("another network removed the owner's remote (%d) or Local", tb.remotes)
	}

	// Empty again: another network may take the VNI.
	r.RemoveRemote(7, testPN(7), netip.MustParseAddr("10.240.0.2"))
	if err := r.SetLocal(7, testPN(7), nil, LocalOptions{}); err != nil {
		t.Fatal(err)
	}
	a.Close()
	if got := r.VNIOwner(7); got != "" {
		t.Fatalf("VNIOwner after the table emptied = %q", got)
	}
	if err := r.SetRemote(7, "pn-a", netip.MustParseAddr("10.240.0.2"), node); err != nil {
		t.Fatalf("SetRemote once the VNI is free: %v", err)
	}
	if got := r.VNIOwner(7); got != "pn-a" {
		t.Errorf("VNIOwner = %q, want pn-a", got)
	}
}

// TestVNIHalfChecks: ports live in the PN half only, egress routes and
// returns in the egress half only, and nothing is accepted without a
// network id.
func TestVNIHalfChecks(t *testing.T) {
	r := New(Config{})
	t.Cleanup(func() { r.Close() })
	addr := netip.MustParseAddr("10.240.0.1")
	for _, cfg := range []PortConfig{
		{Network: EgressVNIBit | 7, PN: "pn-x", Addr: addr},
		{Network: 0, PN: "pn-x", Addr: addr},
		{Network: 7, Addr: addr},
	} {
		if _, err := r.attach(newFakePort(1, false), cfg); err == nil {
			t.Errorf("attach %+v accepted", cfg)
		}
	}
	if err := r.SetRemote(7, "", addr, netip.AddrFrom4(testNodeB)); err == nil {
		t.Error("SetRemote without a network id accepted")
	}
	if err := r.SetLocal(7, "", &countLocal{}, LocalOptions{}); err == nil {
		t.Error("SetLocal without a network id accepted")
	}
	if err := r.SetLocal(0, "pn-x", &countLocal{}, LocalOptions{}); err == nil {
		t.Error("SetLocal on the probe VNI accepted")
	}
	a := attachNoLoop(t, r, newFakePort(1, false), 7, "10.240.0.1", 1390)
	gw := []EgressGateway{{Overlay: netip.AddrFrom4(testNodeB), New: true, Existing: true}}
	if err := a.SetEgress(&EgressRoute{VNI: 9, Gateways: gw}); err == nil {
		t.Error("SetEgress with a PN-half VNI accepted")
	}
	if err := a.SetEgress(&EgressRoute{VNI: EgressVNIBit | 9, Gateways: gw}); err != nil {
		t.Errorf("SetEgress: %v", err)
	}
	if err := r.SetEgressReturn(9, 7, testPN(7), []netip.Addr{netip.AddrFrom4(testNodeB)}); err == nil {
		t.Error("SetEgressReturn with a PN-half egress VNI accepted")
	}
	if err := r.SetEgressReturn(EgressVNIBit|9, EgressVNIBit|7, testPN(7), []netip.Addr{netip.AddrFrom4(testNodeB)}); err == nil {
		t.Error("SetEgressReturn for an egress-half network accepted")
	}
}

// overlayFrame wraps pkt in a VXLAN frame from src to dst at wgOffset.
func overlayFrame(pkt []byte, vni uint32, src, dst [4]byte) []byte {
	buf := make([]byte, wgOffset+VXLANOverhead+len(pkt))
	copy(buf[wgOffset+VXLANOverhead:], pkt)
	encodeVXLAN(buf[wgOffset:], src, dst, vni)
	return buf
}

// TestOverlayEgressOnlyAtGateways (AUDIT D13 d): a frame from another
// node for outside the network reaches a NAT only in an egress VNI; in a
// PN's own VNI the node's egress stack is this node's containers' only.
func TestOverlayEgressOnlyAtGateways(t *testing.T) {
	b := newOverlayNode(t, testNodeB)
	attachNoLoop(t, b.r, newFakePort(8, true), 7, "10.240.0.2", 1390)
	b.setRemote(t, 7, "10.240.0.1", testNodeA)
	nodeEgress := &countLocal{}
	if err := b.r.SetLocal(7, testPN(7), nodeEgress, LocalOptions{Egress: true}); err != nil {
		t.Fatal(err)
	}
	const evni = EgressVNIBit | 7
	b.setRemote(t, evni, "10.240.0.1", testNodeA)
	nat := &countLocal{}
	if err := b.r.SetLocal(evni, testPN(evni), nat, LocalOptions{Egress: true}); err != nil {
		t.Fatal(err)
	}
	for _, dst := range []string{"192.0.2.1", "169.254.20.10"} {
		if _, err := b.o.Write([][]byte{overlayFrame(UDP4("10.240.0.1", dst), 7, testNodeA, testNodeB)}, wgOffset); err != nil {
			t.Fatal(err)
		}
	}
	if s := b.r.Stats(); s.Drops["overlay_egress"] != 2 || nodeEgress.n != 0 {
		t.Fatalf("PN VNI frames for outside: overlay_egress %d, node egress got %d", s.Drops["overlay_egress"], nodeEgress.n)
	}
	if _, err := b.o.Write([][]byte{overlayFrame(UDP4("10.240.0.1", "192.0.2.1"), evni, testNodeA, testNodeB)}, wgOffset); err != nil {
		t.Fatal(err)
	}
	if nat.n != 1 {
		t.Fatalf("the gateway's NAT got %d packets, want 1", nat.n)
	}
}

// TestEgressReturnSource (AUDIT D13 c): a gateway's answers must come
// from outside the network; one posing as a peer of the container, as
// its resolver or as a broadcast/multicast/zero source is refused.
func TestEgressReturnSource(t *testing.T) {
	w := newOverlayNode(t, testNodeA)
	dst := newFakePort(8, true)
	a := attachNoLoop(t, w.r, dst, 7, "10.240.0.2", 1390)
	const evni = EgressVNIBit | 11
	gw := netip.AddrFrom4(testNodeB)
	if err := a.SetEgress(&EgressRoute{VNI: evni, Gateways: []EgressGateway{{Overlay: gw, New: true, Existing: true}}}); err != nil {
		t.Fatal(err)
	}
	if err := w.r.SetEgressReturn(evni, 7, testPN(7), []netip.Addr{gw}); err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{"10.240.0.1", "10.240.3.255", "10.240.0.0", "169.254.20.10", "0.0.0.1", "224.0.0.1", "255.255.255.255"} {
		before := w.r.Stats().Drops["return_source"]
		if _, err := w.o.Write([][]byte{overlayFrame(UDP4(src, "10.240.0.2"), evni, testNodeB, testNodeA)}, wgOffset); err != nil {
			t.Fatal(err)
		}
		if got := w.r.Stats().Drops["return_source"]; got != before+1 {
			t.Errorf("return from %s: return_source %d, want %d", src, got, before+1)
		}
	}
	if len(dst.writes) != 0 {
		t.Fatalf("the container got %d writes of refused returns", len(dst.writes))
	}
	if _, err := w.o.Write([][]byte{overlayFrame(UDP4("192.0.2.1", "10.240.0.2"), evni, testNodeB, testNodeA)}, wgOffset); err != nil {
		t.Fatal(err)
	}
	if len(dst.writes) != 1 {
		t.Fatalf("an answer from outside: %d writes, want 1", len(dst.writes))
	}
}
