package router

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// tcp4 builds an IPv4/TCP segment with the given flags and payload size.
func tcp4(src, dst string, sport, dport uint16, flags header.TCPFlags, payload int) []byte {
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	b := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize+payload)
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(s), DstAddr: tcpip.AddrFrom4(d)})
	ip.SetChecksum(^ip.CalculateChecksum())
	header.TCP(b[header.IPv4MinimumSize:]).Encode(&header.TCPFields{SrcPort: sport, DstPort: dport,
		DataOffset: header.TCPMinimumSize, Flags: flags, WindowSize: 65535})
	return b
}

// sweepAll runs Sweep twice (retire, then report) and returns the flows.
// The tests using it track on their own goroutine: no grace is needed.
func sweepAll(ft *FlowTable, cfg SweepConfig) []Flow {
	var out []Flow
	cfg.Reports = func(f Flow) { out = append(out, f) }
	ft.grace = 0
	ft.Sweep(cfg)
	ft.Sweep(cfg)
	return out
}

func flowPair(t *testing.T) (*Router, *FlowTable, *Attached, *Attached) {
	r := New(Config{})
	t.Cleanup(func() { r.Close() })
	ft := NewFlowTable(64)
	r.EnableFlows(ft)
	a := attachNoLoop(t, r, newFakePort(16, false), 1, "10.240.0.1", 1500)
	b := attachNoLoop(t, r, newFakePort(16, false), 1, "10.240.0.2", 1500)
	return r, ft, a, b
}

func TestFlowBothDirectionsOneRecord(t *testing.T) {
	r, ft, a, b := flowPair(t)
	a.forward(load(a,
		tcp4("10.240.0.1", "10.240.0.2", 40000, 80, header.TCPFlagSyn, 0),
		tcp4("10.240.0.1", "10.240.0.2", 40000, 80, header.TCPFlagAck, 1000),
		tcp4("10.240.0.1", "10.240.0.2", 40000, 80, header.TCPFlagAck|header.TCPFlagFin, 500),
	), r.now())
	b.forward(load(b,
		tcp4("10.240.0.2", "10.240.0.1", 80, 40000, header.TCPFlagSyn|header.TCPFlagAck, 0),
		tcp4("10.240.0.2", "10.240.0.1", 80, 40000, header.TCPFlagAck|header.TCPFlagFin, 7),
	), r.now())
	if st := ft.Stats(); st.Live != 1 || st.Created != 1 {
		t.Fatalf("table %+v, want one live flow", st)
	}
	// Not ended yet: open for less than the timeouts.
	if got := sweepAll(ft, SweepConfig{Idle: time.Hour, Closed: time.Hour}); len(got) != 0 {
		t.Fatalf("flows ended early: %+v", got)
	}
	got := sweepAll(ft, SweepConfig{Idle: time.Hour, Closed: 0})
	if len(got) != 1 {
		t.Fatalf("%d flows, want 1: %+v", len(got), got)
	}
	f := got[0]
	want := Flow{VNI: 1, Proto: 6,
		Src: netip.MustParseAddrPort("10.240.0.1:40000"), Dst: netip.MustParseAddrPort("10.240.0.2:80"),
		PacketsOut: 3, PacketsIn: 2, BytesOut: 3*40 + 1500, BytesIn: 2*40 + 7, PayloadOut: 1500, PayloadIn: 7,
		FinOut: true, FinIn: true, Reason: "fin"}
	f.Start, f.End = time.Time{}, time.Time{}
	if f != want {
		t.Errorf("flow\n got %+v\nwant %+v", f, want)
	}
	if st := ft.Stats(); st.Live != 0 {
		t.Errorf("%d flows left after the report", st.Live)
	}
}

func TestFlowReasonsAndReplies(t *testing.T) {
	r, ft, a, b := flowPair(t)
	a.forward(load(a,
		UDP4("10.240.0.1", "10.240.0.2"),
		tcp4("10.240.0.1", "10.240.0.2", 1, 2, header.TCPFlagRst, 0),
		Pkt4("10.240.0.1", "10.240.0.2", PktOpts{Proto: uint8(header.ICMPv4ProtocolNumber), ICMPType: header.ICMPv4Echo}),
	), r.now())
	b.forward(load(b, Pkt4("10.240.0.2", "10.240.0.1", PktOpts{Proto: uint8(header.ICMPv4ProtocolNumber), ICMPType: header.ICMPv4EchoReply})), r.now())
	got := sweepAll(ft, SweepConfig{Idle: 0, Closed: 0})
	reasons := map[uint8]Flow{}
	for _, f := range got {
		reasons[f.Proto] = f
	}
	if len(got) != 3 || reasons[17].Reason != "idle" || reasons[6].Reason != "rst" || !reasons[6].Reset {
		t.Fatalf("flows %+v", got)
	}
	if ic := reasons[1]; ic.PacketsOut != 1 || ic.PacketsIn != 1 || ic.Src.Port() != 77 {
		t.Errorf("ping flow %+v, want echo and reply in one flow (ident 77)", ic)
	}
	if u := reasons[17]; u.PayloadOut != 32 || u.Src.Port() != 4000 || u.Dst.Port() != 5000 {
		t.Errorf("UDP flow %+v", u)
	}

	// What the stack sends back only adds to flows: a DNS answer (no
	// tracked query) makes none.
	r.WriteLocal(1, [][]byte{append(make([]byte, Headroom), UDP4("169.254.20.10", "10.240.0.1")...)}, Headroom)
	if st := ft.Stats(); st.Live != 0 {
		t.Errorf("a reply without its flow made a flow: %+v", st)
	}
}

func TestFlowFlush(t *testing.T) {
	r, ft, a, _ := flowPair(t)
	a.forward(load(a, UDP4("10.240.0.1", "10.240.0.2")), r.now())
	var got []Flow
	ft.Sweep(SweepConfig{Idle: time.Hour, Closed: time.Hour, Flush: true, Reports: func(f Flow) { got = append(got, f) }})
	if len(got) != 1 || got[0].Reason != "flush" {
		t.Fatalf("flush reported %+v", got)
	}
}

func TestFlowTableFull(t *testing.T) {
	r := New(Config{})
	t.Cleanup(func() { r.Close() })
	ft := NewFlowTable(flowProbe) // one window: 16 flows at most
	r.EnableFlows(ft)
	a := attachNoLoop(t, r, newFakePort(64, false), 1, "10.240.0.1", 1500)
	attachNoLoop(t, r, newFakePort(64, false), 1, "10.240.0.2", 1500)
	var pkts [][]byte
	for i := range 20 {
		pkts = append(pkts, tcp4("10.240.0.1", "10.240.0.2", uint16(1000+i), 80, header.TCPFlagSyn, 0))
	}
	a.forward(load(a, pkts...), r.now())
	if st := ft.Stats(); st.Live != flowProbe || st.Dropped != 20-flowProbe {
		t.Fatalf("table %+v, want %d live and %d dropped", st, flowProbe, 20-flowProbe)
	}
	if n := len(sweepAll(ft, SweepConfig{})); n != flowProbe {
		t.Fatalf("%d flows reported, want %d", n, flowProbe)
	}
	// Freed slots take new flows again.
	a.forward(load(a, pkts[:4]...), r.now())
	if st := ft.Stats(); st.Live != 4 {
		t.Fatalf("table %+v after the sweep, want 4 live", st)
	}
}

func TestFlowTrackingAllocatesNothing(t *testing.T) {
	r, _, a, _ := flowPair(t)
	ft := NewFlowTable(1 << 12)
	r.EnableFlows(ft)
	n := load(a,
		tcp4("10.240.0.1", "10.240.0.2", 40000, 80, header.TCPFlagAck, 1000),
		UDP4("10.240.0.1", "10.240.0.2"),
		UDP4("10.240.0.1", "1.1.1.1"), // egress: no Local here, dropped, not tracked
	)
	allocs := testing.AllocsPerRun(100, func() { a.forward(n, r.now()) })
	if allocs != 0 {
		t.Errorf("forward with flows on allocates %v times per batch", allocs)
	}
	if st := ft.Stats(); st.Live != 2 {
		t.Errorf("table %+v, want 2 flows", st)
	}
}

func TestFlowTupleIgnoresFragmentsAndICMPErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		pkt  []byte
	}{
		{"later fragment", Pkt4("10.240.0.1", "10.240.0.2", PktOpts{FragOff: 1})},
		{"ICMP error", Pkt4("10.240.0.1", "10.240.0.2", PktOpts{Proto: uint8(header.ICMPv4ProtocolNumber), ICMPType: header.ICMPv4DstUnreachable})},
		{"truncated TCP", tcp4("10.240.0.1", "10.240.0.2", 1, 2, header.TCPFlagAck, 0)[:30]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := ipv4Packet{hdr: header.IPv4(tc.pkt)}
			copy(p.src[:], p.hdr.SourceAddressSlice())
			copy(p.dst[:], p.hdr.DestinationAddressSlice())
			if _, _, _, ok := tupleOf(1, p); ok {
				t.Errorf("tracked")
			}
		})
	}
}

// BenchmarkForwardFlows is BenchmarkForward with flow logs on: one flow,
// found in its first slot.
func BenchmarkForwardFlows(b *testing.B) {
	for _, batch := range []int{1, 128} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			const size = 1400
			r, a, _ := forwardFixture(b, batch, size)
			r.EnableFlows(NewFlowTable(1 << 16))
			b.SetBytes(int64(batch * size))
			b.ReportAllocs()
			for b.Loop() {
				a.forward(batchOf(a), r.now())
			}
			b.ReportMetric(float64(b.N)*float64(batch)/b.Elapsed().Seconds(), "pkts/s")
		})
	}
}

// Ports track concurrently while the logger sweeps: every packet is in
// exactly one reported flow or counted as not tracked (run with -race).
func TestFlowConcurrentSweep(t *testing.T) {
	r, ft, a, b := flowPair(t)
	const rounds = 200
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range rounds {
			a.forward(load(a, tcp4("10.240.0.1", "10.240.0.2", uint16(1000+i%8), 80, header.TCPFlagAck, 10)), r.now())
		}
	}()
	for i := range rounds {
		b.forward(load(b, tcp4("10.240.0.2", "10.240.0.1", uint16(2000+i%8), 80, header.TCPFlagAck, 10)), r.now())
	}
	var pkts uint64
	count := func(f Flow) { pkts += f.PacketsOut + f.PacketsIn }
	for {
		ft.Sweep(SweepConfig{Reports: count})
		select {
		case <-done:
			// No tracker is left: the slots retired last need no grace.
			ft.grace = 0
			ft.Sweep(SweepConfig{Reports: count})
			ft.Sweep(SweepConfig{Reports: count})
			// A packet whose new flow found its window full (slots wait
			// out their grace) is counted as dropped instead.
			if d := ft.Stats().Dropped; pkts+d != 2*rounds {
				t.Fatalf("%d packets in the reported flows + %d not tracked, want %d", pkts, d, 2*rounds)
			}
			return
		default:
		}
	}
}
