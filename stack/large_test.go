package stack

import (
	"bytes"
	"encoding/binary"
	"slices"
	"sync"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// pktRecorder is a NIC that keeps a copy of every packet delivered to it.
type pktRecorder struct {
	mu   sync.Mutex
	pkts [][]byte
}

func (r *pktRecorder) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	v := pkt.ToView()
	defer v.Release()
	r.mu.Lock()
	r.pkts = append(r.pkts, bytes.Clone(v.AsSlice()))
	r.mu.Unlock()
}

func (r *pktRecorder) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// segOpts describe a test TCP segment from 10.240.0.7:40000 to
// 192.0.2.1:80 with a timestamp option.
type segOpts struct {
	seq     uint32
	payload []byte
	flags   header.TCPFlags
	sport   uint16
	ts      uint32
	badSum  bool
}

// tcpSeg builds the segment with valid checksums (unless badSum).
func tcpSeg(o segOpts) []byte {
	const thl = header.TCPMinimumSize + 12
	if o.flags == 0 {
		o.flags = header.TCPFlagAck
	}
	if o.sport == 0 {
		o.sport = 40000
	}
	p := make([]byte, header.IPv4MinimumSize+thl+len(o.payload))
	ip := header.IPv4(p)
	src, dst := tcpip.AddrFrom4([4]byte{10, 240, 0, 7}), tcpip.AddrFrom4([4]byte{192, 0, 2, 1})
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(p)), Flags: header.IPv4FlagDontFragment, TTL: 64,
		Protocol: uint8(header.TCPProtocolNumber), SrcAddr: src, DstAddr: dst})
	ip.SetChecksum(^ip.CalculateChecksum())
	tcp := header.TCP(p[header.IPv4MinimumSize:])
	tcp.Encode(&header.TCPFields{SrcPort: o.sport, DstPort: 80, SeqNum: o.seq, AckNum: 7, DataOffset: thl,
		Flags: o.flags, WindowSize: 1000})
	opts := tcp[header.TCPMinimumSize:thl]
	opts[0], opts[1], opts[2], opts[3] = 1, 1, 8, 10 // NOP NOP TS
	binary.BigEndian.PutUint32(opts[4:], o.ts)
	copy(tcp[thl:], o.payload)
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(tcp)))
	tcp.SetChecksum(^checksum.Checksum(tcp, sum))
	if o.badSum {
		tcp.SetChecksum(tcp.Checksum() + 1)
	}
	return p
}

// checkSegment fails unless p is a valid TCP/IPv4 packet (both checksums)
// starting at seq and carrying payload.
func checkSegment(t *testing.T, p []byte, seq uint32, payload []byte) {
	t.Helper()
	ip := header.IPv4(p)
	if !ip.IsValid(len(p)) || !ip.IsChecksumValid() {
		t.Fatalf("bad IPv4 header (total length %d of %d)", ip.TotalLength(), len(p))
	}
	tcp := header.TCP(ip.Payload())
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(tcp)))
	if checksum.Checksum(tcp, sum) != 0xffff {
		t.Error("bad TCP checksum")
	}
	if tcp.SequenceNumber() != seq {
		t.Errorf("seq %d, want %d", tcp.SequenceNumber(), seq)
	}
	if !bytes.Equal(tcp.Payload(), payload) {
		t.Errorf("payload of %d bytes, want %d", len(tcp.Payload()), len(payload))
	}
}

func payloadOf(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// coalesce runs pkts through a run as DeliverBatch does and returns what
// the NIC got.
func coalesce(pkts ...[]byte) [][]byte {
	rec := &pktRecorder{}
	l := newLink(1390, 16, func([][]byte, int) {})
	l.Attach(rec)
	defer func() {
		l.Attach(nil)
		l.Wait()
	}()
	var run groRun
	for _, p := range pkts {
		if run.n > 0 && run.add(p) {
			continue
		}
		run.flush(l)
		if !run.start(p) {
			l.deliver(p)
		}
	}
	run.flush(l)
	return rec.pkts
}

func TestCoalesceMergesARun(t *testing.T) {
	// Odd payload sizes: the later payloads start at odd offsets, whose
	// sums go in byte-swapped.
	for _, size := range []int{1338, 1001} {
		a, b, c := payloadOf(size, 1), payloadOf(size, 2), payloadOf(size/2, 3)
		got := coalesce(
			tcpSeg(segOpts{seq: 100, payload: a}),
			tcpSeg(segOpts{seq: 100 + uint32(size), payload: b}),
			tcpSeg(segOpts{seq: 100 + 2*uint32(size), payload: c, flags: header.TCPFlagAck | header.TCPFlagPsh}),
		)
		if len(got) != 1 {
			t.Fatalf("payload %d: %d packets, want 1 merged", size, len(got))
		}
		checkSegment(t, got[0], 100, append(append(append([]byte(nil), a...), b...), c...))
		if f := header.TCP(header.IPv4(got[0]).Payload()).Flags(); f != header.TCPFlagAck|header.TCPFlagPsh {
			t.Errorf("flags %v, want ACK|PSH", f)
		}
	}
}

func TestCoalesceKeepsApart(t *testing.T) {
	p := payloadOf(1000, 9)
	seg := func(seq uint32, o segOpts) []byte {
		o.seq, o.payload = seq, p
		return tcpSeg(o)
	}
	ack := tcpSeg(segOpts{seq: 3000})
	for _, tc := range []struct {
		name string
		pkts [][]byte
		want []int // payload bytes of each packet delivered, in order
	}{
		{"gap in sequence", [][]byte{seg(0, segOpts{}), seg(2000, segOpts{})}, []int{1000, 1000}},
		{"other flow", [][]byte{seg(0, segOpts{}), seg(1000, segOpts{sport: 40001})}, []int{1000, 1000}},
		{"other timestamp", [][]byte{seg(0, segOpts{}), seg(1000, segOpts{ts: 1})}, []int{1000, 1000}},
		{"pure ACK between", [][]byte{seg(0, segOpts{}), ack, seg(1000, segOpts{})}, []int{1000, 0, 1000}},
		{"PSH ends the run", [][]byte{seg(0, segOpts{flags: header.TCPFlagAck | header.TCPFlagPsh}), seg(1000, segOpts{})}, []int{1000, 1000}},
		{"FIN not merged", [][]byte{seg(0, segOpts{}), seg(1000, segOpts{flags: header.TCPFlagAck | header.TCPFlagFin})}, []int{1000, 1000}},
		{"bad checksum passed on alone", [][]byte{seg(0, segOpts{}), seg(1000, segOpts{badSum: true}), seg(2000, segOpts{})}, []int{1000, 1000, 1000}},
		{"shorter segment ends the run", [][]byte{seg(0, segOpts{}), tcpSeg(segOpts{seq: 1000, payload: p[:10]}), seg(1010, segOpts{})}, []int{1010, 1000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := coalesce(tc.pkts...)
			var sizes []int
			for _, g := range got {
				sizes = append(sizes, len(header.TCP(header.IPv4(g).Payload()).Payload()))
			}
			if !slices.Equal(sizes, tc.want) {
				t.Errorf("delivered payloads %v, want %v", sizes, tc.want)
			}
		})
	}
}

// TestCoalesceBounds: a run stops at 64 KiB and at groMaxSegs segments.
func TestCoalesceBounds(t *testing.T) {
	var pkts [][]byte
	const size = 1338
	var want []byte
	for i := range 60 {
		p := payloadOf(size, byte(i))
		want = append(want, p...)
		pkts = append(pkts, tcpSeg(segOpts{seq: uint32(i * size), payload: p}))
	}
	got := coalesce(pkts...)
	if len(got) != 2 {
		t.Fatalf("%d packets, want 2", len(got))
	}
	first := len(header.TCP(header.IPv4(got[0]).Payload()).Payload())
	if first != 48*size || len(got[0]) > 0xffff {
		t.Errorf("first packet carries %d bytes (%d in all), want 48 segments", first, len(got[0]))
	}
	checkSegment(t, got[0], 0, want[:first])
	checkSegment(t, got[1], uint32(first), want[first:])

	pkts = pkts[:0]
	for i := range groMaxSegs + 1 {
		pkts = append(pkts, tcpSeg(segOpts{seq: uint32(i * 100), payload: payloadOf(100, 1)}))
	}
	if got := coalesce(pkts...); len(got) != 2 {
		t.Errorf("%d packets from %d small segments, want 2", len(got), groMaxSegs+1)
	}
}

// gatewayBatch is a decrypted overlay batch of one bulk flow: 44
// consecutive full segments.
func gatewayBatch() [][]byte {
	var pkts [][]byte
	for i := range 44 {
		pkts = append(pkts, tcpSeg(segOpts{seq: uint32(i * 1338), payload: payloadOf(1338, byte(i))}))
	}
	return pkts
}

// coalesceInto is DeliverBatch's loop without the stack around the link.
func coalesceInto(l *link, pkts [][]byte) {
	var run groRun
	for _, p := range pkts {
		if run.n > 0 && run.add(p) {
			continue
		}
		run.flush(l)
		if !run.start(p) {
			l.deliver(p)
		}
	}
	run.flush(l)
}

func TestCoalesceAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector")
	}
	l := newLink(1390, 16, func([][]byte, int) {})
	l.Attach(nopDispatcher{})
	defer func() {
		l.Attach(nil)
		l.Wait()
	}()
	pkts := gatewayBatch()
	coalesceInto(l, pkts)
	if allocs := testing.AllocsPerRun(100, func() { coalesceInto(l, pkts) }); allocs != 0 {
		t.Errorf("coalescing a batch of %d segments allocates %v times", len(pkts), allocs)
	}
	if c := l.coalesced.Load(); c == 0 {
		t.Error("nothing coalesced")
	}
}

// BenchmarkCoalesce measures a gateway NAT's share of one overlay batch of
// a bulk flow before gVisor: checks, checksums, the copy into one packet.
func BenchmarkCoalesce(b *testing.B) {
	l := newLink(1390, 16, func([][]byte, int) {})
	l.Attach(nopDispatcher{})
	defer func() {
		l.Attach(nil)
		l.Wait()
	}()
	pkts := gatewayBatch()
	b.SetBytes(int64(len(pkts) * 1338))
	b.ReportAllocs()
	for b.Loop() {
		coalesceInto(l, pkts)
	}
}

// FuzzCoalesce feeds arbitrary packets, and variants of a valid run, to
// the coalescer: it must never panic, and what it merges is valid.
func FuzzCoalesce(f *testing.F) {
	f.Add(tcpSeg(segOpts{seq: 1, payload: payloadOf(100, 1)}), uint16(100), uint8(3))
	f.Add([]byte{0x45, 0, 0, 20}, uint16(0), uint8(2))
	f.Fuzz(func(t *testing.T, pkt []byte, step uint16, n uint8) {
		rec := &pktRecorder{}
		l := newLink(1390, 16, func([][]byte, int) {})
		l.Attach(rec)
		defer func() {
			l.Attach(nil)
			l.Wait()
		}()
		// The packet, then copies with the sequence number advanced by
		// step each time (a run if pkt is a valid segment of step bytes).
		pkts := [][]byte{pkt}
		for i := 1; i < int(n%8); i++ {
			p := bytes.Clone(pkt)
			if len(p) >= header.IPv4MinimumSize+header.TCPMinimumSize && p[0] == 0x45 {
				tcp := header.TCP(p[header.IPv4MinimumSize:])
				tcp.SetSequenceNumber(tcp.SequenceNumber() + uint32(i)*uint32(step))
				tcp.SetChecksum(0)
				ip := header.IPv4(p)
				if tl := int(ip.TotalLength()); tl <= len(p) && tl >= header.IPv4MinimumSize {
					sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(tl-header.IPv4MinimumSize))
					tcp.SetChecksum(^checksum.Checksum(p[header.IPv4MinimumSize:tl], sum))
				}
			}
			pkts = append(pkts, p)
		}
		coalesceInto(l, pkts)
		for _, g := range rec.pkts {
			if slices.ContainsFunc(pkts, func(p []byte) bool { return bytes.Equal(p, g) }) {
				continue // passed on as it came
			}
			// Merged: a valid TCP/IPv4 packet without padding.
			ip := header.IPv4(g)
			if len(g) < header.IPv4MinimumSize+header.TCPMinimumSize || int(ip.TotalLength()) != len(g) || !ip.IsChecksumValid() {
				t.Fatalf("merged packet of %d bytes has a bad IPv4 header", len(g))
			}
			sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(g)-header.IPv4MinimumSize))
			if checksum.Checksum(g[header.IPv4MinimumSize:], sum) != 0xffff {
				t.Fatalf("merged packet of %d bytes has a bad TCP checksum", len(g))
			}
		}
	})
}
