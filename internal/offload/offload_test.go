package offload_test

import (
	"bytes"
	"testing"

	"github.com/vrouter/vrouter/internal/offload"
	"github.com/vrouter/vrouter/internal/offload/offloadtest"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

const off = 64 // headroom in front of each output buffer, as the router uses

func outBufs(n, size int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, off+size)
	}
	return bufs, make([]int, n)
}

func TestDecode(t *testing.T) {
	hdr, _ := offloadtest.Super(offloadtest.TCP{Src: "10.240.0.1", Dst: "10.240.0.2", Payload: 3000}, 1350)
	h := offload.Decode(hdr[:])
	want := offload.Hdr{Flags: offload.NeedsCsum, GSOType: offload.GSOTCPv4, HdrLen: 40, GSOSize: 1350, CsumStart: 20, CsumOffset: 16}
	if h != want {
		t.Fatalf("Decode = %+v, want %+v", h, want)
	}
	if h.Plain() || h.GSO() != offload.GSOTCPv4 {
		t.Errorf("Plain %v GSO %d", h.Plain(), h.GSO())
	}
	h.GSOType |= offload.GSOECN
	if h.GSO() != offload.GSOTCPv4 {
		t.Errorf("GSO with ECN = %d", h.GSO())
	}
	if !(offload.Hdr{}).Plain() || !(offload.Hdr{Flags: 2}).Plain() {
		t.Error("a zero header (or DATA_VALID) is not plain")
	}
}

func TestSplitTCP(t *testing.T) {
	for _, tt := range []struct {
		name          string
		payload, mss  int
		flags         header.TCPFlags
		wantSegs      int
		wantLastBytes int
	}{
		{"exact multiple", 3 * 1350, 1350, 0, 3, 1350},
		{"remainder", 64000, 1350, 0, 48, 64000 - 47*1350},
		{"one segment", 100, 1350, 0, 1, 100},
		{"header only", 0, 1350, header.TCPFlagAck, 1, 0},
		{"fin and cwr", 2800, 1400, header.TCPFlagAck | header.TCPFlagFin | header.TCPFlagPsh | header.TCPFlagCwr, 2, 1400},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in := offloadtest.TCP{Src: "10.240.0.1", Dst: "10.240.0.2", Seq: 0xfffff000, ID: 0xfffe, Payload: tt.payload, Flags: tt.flags}
			_, pkt := offloadtest.Super(in, tt.mss)
			whole := offloadtest.Packet(in) // the payload the segments must add up to
			out, sizes := outBufs(64, 1500)
			n, total := offload.SplitTCP(header.IPv4(pkt), tt.mss, 0, out, sizes, off)
			if n != tt.wantSegs || total != tt.wantSegs {
				t.Fatalf("SplitTCP = %d of %d, want %d", n, total, tt.wantSegs)
			}
			var payload []byte
			for k := range n {
				seg := out[k][off : off+sizes[k]]
				if !offloadtest.Valid(seg) {
					t.Fatalf("segment %d: bad checksums or lengths", k)
				}
				ip := header.IPv4(seg)
				tcp := header.TCP(ip.Payload())
				if ip.ID() != in.ID+uint16(k) {
					t.Errorf("segment %d: IP ID %#x", k, ip.ID())
				}
				if got, want := tcp.SequenceNumber(), in.Seq+uint32(k*tt.mss); got != want {
					t.Errorf("segment %d: seq %#x, want %#x", k, got, want)
				}
				f := tcp.Flags()
				last, first := k == n-1, k == 0
				if f.Contains(header.TCPFlagFin) != (last && in.Flags.Contains(header.TCPFlagFin)) ||
					f.Contains(header.TCPFlagCwr) != (first && in.Flags.Contains(header.TCPFlagCwr)) {
					t.Errorf("segment %d: flags %v", k, f)
				}
				if len(tcp.Payload()) > tt.mss {
					t.Errorf("segment %d: %d payload bytes > mss %d", k, len(tcp.Payload()), tt.mss)
				}
				payload = append(payload, tcp.Payload()...)
			}
			if got := len(header.TCP(header.IPv4(out[n-1][off : off+sizes[n-1]]).Payload()).Payload()); got != tt.wantLastBytes {
				t.Errorf("last segment carries %d bytes, want %d", got, tt.wantLastBytes)
			}
			if !bytes.Equal(payload, whole[40:]) {
				t.Error("segments do not add up to the payload")
			}
		})
	}
}

// TestSplitTCPInRounds: a caller with fewer buffers than segments gets
// them in rounds, identical to one pass.
func TestSplitTCPInRounds(t *testing.T) {
	_, pkt := offloadtest.Super(offloadtest.TCP{Src: "10.240.0.1", Dst: "10.240.0.2", Payload: 20000}, 1000)
	all, allSizes := outBufs(32, 1500)
	n, total := offload.SplitTCP(header.IPv4(pkt), 1000, 0, all, allSizes, off)
	if n != 20 || total != 20 {
		t.Fatalf("one pass: %d of %d", n, total)
	}
	few, sizes := outBufs(7, 1500)
	for first := 0; first < total; {
		n, tot := offload.SplitTCP(header.IPv4(pkt), 1000, first, few, sizes, off)
		if n <= 0 || tot != total {
			t.Fatalf("round at %d: %d of %d", first, n, tot)
		}
		for k := range n {
			if !bytes.Equal(few[k][off:off+sizes[k]], all[first+k][off:off+allSizes[first+k]]) {
				t.Fatalf("segment %d differs between rounds and one pass", first+k)
			}
		}
		first += n
	}
}

func TestSplitTCPRejects(t *testing.T) {
	in := offloadtest.TCP{Src: "10.240.0.1", Dst: "10.240.0.2", Payload: 4000}
	_, pkt := offloadtest.Super(in, 1000)
	out, sizes := outBufs(8, 1500)
	udp := append([]byte(nil), pkt...)
	udp[9] = uint8(header.UDPProtocolNumber)
	frag := append([]byte(nil), pkt...)
	header.IPv4(frag).SetFlagsFragmentOffset(header.IPv4FlagMoreFragments, 0)
	badOff := append([]byte(nil), pkt...)
	badOff[20+12] = 0xf0 // data offset 60 bytes
	small, smallSizes := outBufs(8, 500)
	for _, tt := range []struct {
		name  string
		pkt   []byte
		mss   int
		first int
		out   [][]byte
		sizes []int
	}{
		{"not TCP", udp, 1000, 0, out, sizes},
		{"fragment", frag, 1000, 0, out, sizes},
		{"zero mss", pkt, 0, 0, out, sizes},
		{"header beyond packet", badOff[:20+40], 1000, 0, out, sizes},
		{"first past the end", pkt, 1000, 4, out, sizes},
		{"buffers too small", pkt, 1000, 0, small, smallSizes},
	} {
		if n, _ := offload.SplitTCP(header.IPv4(tt.pkt), tt.mss, tt.first, tt.out, tt.sizes, off); n != -1 {
			t.Errorf("%s: SplitTCP = %d, want -1", tt.name, n)
		}
	}
}

func TestCompleteChecksum(t *testing.T) {
	hdr, pkt := offloadtest.Partial(offloadtest.TCP{Src: "10.240.0.1", Dst: "10.240.0.2", Payload: 777})
	if offloadtest.Valid(pkt) {
		t.Fatal("partial packet already valid: the test proves nothing")
	}
	h := offload.Decode(hdr[:])
	if !offload.CompleteChecksum(pkt, h) || !offloadtest.Valid(pkt) {
		t.Fatal("checksum not completed")
	}
	h.CsumStart = uint16(len(pkt))
	if offload.CompleteChecksum(pkt, h) {
		t.Error("offsets outside the packet accepted")
	}
	h.CsumStart, h.CsumOffset = 20, uint16(len(pkt))
	if offload.CompleteChecksum(pkt, h) {
		t.Error("checksum field outside the packet accepted")
	}
}

func TestSplitTCPAllocs(t *testing.T) {
	_, pkt := offloadtest.Super(offloadtest.TCP{Src: "10.240.0.1", Dst: "10.240.0.2", Payload: 64000}, 1350)
	out, sizes := outBufs(64, 1500)
	if a := testing.AllocsPerRun(50, func() { offload.SplitTCP(header.IPv4(pkt), 1350, 0, out, sizes, off) }); a != 0 {
		t.Errorf("SplitTCP allocates %v times", a)
	}
}

// FuzzSplitTCP: outside bytes (a container's kernel writes them) and any
// header values must never make the segmenter panic, and what it makes
// must be valid packets.
func FuzzSplitTCP(f *testing.F) {
	_, pkt := offloadtest.Super(offloadtest.TCP{Src: "10.240.0.1", Dst: "10.240.0.2", Payload: 5000}, 1350)
	f.Add(pkt, uint16(1350), uint8(0))
	f.Add(pkt[:60], uint16(1), uint8(3))
	f.Fuzz(func(t *testing.T, b []byte, mss uint16, first uint8) {
		if len(b) < header.IPv4MinimumSize || !header.IPv4(b).IsValid(len(b)) {
			return // the router validates the IPv4 header first
		}
		b = b[:header.IPv4(b).TotalLength()]
		out, sizes := outBufs(16, 1500)
		n, total := offload.SplitTCP(header.IPv4(b), int(mss), int(first), out, sizes, off)
		if n > len(out) || (n >= 0 && int(first)+n > total) {
			t.Fatalf("SplitTCP = %d of %d with %d buffers from %d", n, total, len(out), first)
		}
		for k := range max(n, 0) {
			if !offloadtest.Valid(out[k][off : off+sizes[k]]) {
				t.Fatalf("segment %d invalid", k)
			}
		}
		h := offload.Hdr{CsumStart: uint16(len(b) / 2), CsumOffset: mss}
		offload.CompleteChecksum(b, h)
	})
}

func BenchmarkSplitTCP(b *testing.B) {
	_, pkt := offloadtest.Super(offloadtest.TCP{Src: "10.240.0.1", Dst: "10.240.0.2", Payload: 64000}, 1350)
	out, sizes := outBufs(64, 1500)
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	for b.Loop() {
		offload.SplitTCP(header.IPv4(pkt), 1350, 0, out, sizes, off)
	}
}
