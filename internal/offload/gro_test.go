package offload_test

import (
	"bytes"
	"slices"
	"testing"

	"github.com/vrouter/vrouter/internal/offload"
	"github.com/vrouter/vrouter/internal/offload/offloadtest"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// segmentsOf splits a super-packet into its segments, each in a buffer
// with headroom off and capacity 65535 (like wireguard-go's buffers).
func segmentsOf(t testing.TB, in offloadtest.TCP, mss int) [][]byte {
	t.Helper()
	_, sp := offloadtest.Super(in, mss)
	out, sizes := outBufs(64, 1500)
	n, _ := offload.SplitTCP(header.IPv4(sp), mss, 0, out, sizes, off)
	if n < 0 {
		t.Fatal("split failed")
	}
	segs := make([][]byte, n)
	for k := range n {
		b := make([]byte, off+sizes[k], 65535)
		copy(b, out[k][:off+sizes[k]])
		segs[k] = b
	}
	return segs
}

func TestCoalesceRoundTrip(t *testing.T) {
	in := offloadtest.TCP{Src: "10.240.0.2", Dst: "10.240.0.1", Seq: 5, ID: 9, Payload: 20000}
	segs := segmentsOf(t, in, 1338)
	out := offload.Coalesce(segs, off, nil)
	if len(out) != 1 {
		t.Fatalf("%d packets, want 1", len(out))
	}
	h := offload.Decode(out[0][off-offload.HdrLen:])
	want := offload.Hdr{Flags: offload.NeedsCsum, GSOType: offload.GSOTCPv4, HdrLen: 40, GSOSize: 1338, CsumStart: 20, CsumOffset: 16}
	if h != want {
		t.Errorf("header %+v, want %+v", h, want)
	}
	_, sp := offloadtest.Super(in, 1338)
	if !bytes.Equal(out[0][off:], sp) {
		t.Error("coalesced packet differs from the super-packet the segments came from")
	}
	pkt := append([]byte(nil), out[0][off:]...)
	if !offload.CompleteChecksum(pkt, h) || !offloadtest.Valid(pkt) {
		t.Error("partial checksum does not complete to a valid one")
	}
}

func TestCoalesceLeavesAlone(t *testing.T) {
	flow := offloadtest.TCP{Src: "10.240.0.2", Dst: "10.240.0.1", Payload: 4 * 1000}
	other := offloadtest.TCP{Src: "10.240.0.3", Dst: "10.240.0.1", Payload: 1000}
	for _, tt := range []struct {
		name  string
		batch func() [][]byte
		want  []int // segments per output packet
	}{
		{"other flow between", func() [][]byte {
			s := segmentsOf(t, flow, 1000)
			return [][]byte{s[0], s[1], segmentsOf(t, other, 1000)[0], s[2], s[3]}
		}, []int{2, 1, 2}},
		{"gap in sequence", func() [][]byte {
			s := segmentsOf(t, flow, 1000)
			return [][]byte{s[0], s[2], s[3]}
		}, []int{1, 2}},
		{"bad checksum", func() [][]byte {
			s := segmentsOf(t, flow, 1000)
			s[1][off+100] ^= 0xff
			return s
		}, []int{1, 1, 2}},
		{"no room to append", func() [][]byte {
			s := segmentsOf(t, flow, 1000)
			s[0] = s[0][:len(s[0]):len(s[0])]
			return s
		}, []int{1, 3}},
		{"short segment ends the run", func() [][]byte {
			s := segmentsOf(t, offloadtest.TCP{Src: "10.240.0.2", Dst: "10.240.0.1", Payload: 2500}, 1000)
			return append(s, segmentsOf(t, offloadtest.TCP{Src: "10.240.0.2", Dst: "10.240.0.1", Seq: 2500, Payload: 1000}, 1000)...)
		}, []int{3, 1}},
		{"not TCP or no payload", func() [][]byte {
			ack := offloadtest.Packet(offloadtest.TCP{Src: "10.240.0.2", Dst: "10.240.0.1", Flags: header.TCPFlagAck})
			syn := offloadtest.Packet(offloadtest.TCP{Src: "10.240.0.2", Dst: "10.240.0.1", Flags: header.TCPFlagSyn, Payload: 10})
			return [][]byte{withRoom(ack), withRoom(syn), withRoom([]byte{0x60, 0, 0, 0})}
		}, []int{1, 1, 1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			batch := tt.batch()
			out := offload.Coalesce(batch, off, nil)
			var got []int
			for _, p := range out {
				h := offload.Decode(p[off-offload.HdrLen:])
				if h.GSOType == offload.GSONone {
					if h != (offload.Hdr{}) {
						t.Errorf("plain packet with header %+v", h)
					}
					got = append(got, 1)
					continue
				}
				payload := len(p) - off - 40
				got = append(got, (payload+int(h.GSOSize)-1)/int(h.GSOSize))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("runs %v, want %v", got, tt.want)
			}
		})
	}
}

// resetter returns a func that undoes what Coalesce did to segs: lengths
// and the first packet's headers (the only bytes it changes in place).
func resetter(segs [][]byte) func() {
	lens := make([]int, len(segs))
	for i, s := range segs {
		lens[i] = len(s)
	}
	head := append([]byte(nil), segs[0][:off+60]...)
	return func() {
		for i := range segs {
			segs[i] = segs[i][:lens[i]]
		}
		copy(segs[0], head)
	}
}

func withRoom(p []byte) []byte {
	b := make([]byte, off+len(p), 65535)
	copy(b[off:], p)
	return b
}

func TestCoalesceAllocs(t *testing.T) {
	in := offloadtest.TCP{Src: "10.240.0.2", Dst: "10.240.0.1", Payload: 40000}
	segs := segmentsOf(t, in, 1338)
	reset := resetter(segs)
	out := make([][]byte, 0, len(segs))
	if a := testing.AllocsPerRun(50, func() {
		reset()
		out = offload.Coalesce(segs, off, out[:0])
		if len(out) != 1 {
			t.Fatalf("%d packets", len(out))
		}
	}); a != 0 {
		t.Errorf("Coalesce allocates %v times", a)
	}
}

// FuzzCoalesce: whatever arrives from other nodes, Coalesce never panics,
// keeps every byte of payload, and what it merges completes to valid
// packets.
func FuzzCoalesce(f *testing.F) {
	in := offloadtest.TCP{Src: "10.240.0.2", Dst: "10.240.0.1", Payload: 3000}
	_, sp := offloadtest.Super(in, 1000)
	f.Add(sp, uint16(1000), uint8(3))
	f.Fuzz(func(t *testing.T, b []byte, mss uint16, cut uint8) {
		var batch [][]byte
		if len(b) >= 20 && header.IPv4(b).IsValid(len(b)) && mss > 0 {
			b = b[:header.IPv4(b).TotalLength()]
			segs, sizes := outBufs(64, 1500)
			if n, _ := offload.SplitTCP(header.IPv4(b), int(mss), 0, segs, sizes, off); n > 0 {
				for k := range n {
					batch = append(batch, withRoom(segs[k][off:off+sizes[k]]))
				}
			}
		}
		// Raw bytes too, cut in pieces.
		for len(b) > 0 {
			n := min(len(b), int(cut)+1)
			batch = append(batch, withRoom(b[:n]))
			b = b[n:]
		}
		out := offload.Coalesce(batch, off, nil)
		for _, p := range out {
			h := offload.Decode(p[off-offload.HdrLen:])
			if h.GSOType == offload.GSONone {
				continue
			}
			pkt := append([]byte(nil), p[off:]...)
			if !offload.CompleteChecksum(pkt, h) || !offloadtest.Valid(pkt) {
				t.Fatal("merged packet invalid")
			}
		}
	})
}

func BenchmarkCoalesce(b *testing.B) {
	in := offloadtest.TCP{Src: "10.240.0.2", Dst: "10.240.0.1", Payload: 64000}
	segs := segmentsOf(b, in, 1338)
	reset := resetter(segs)
	out := make([][]byte, 0, len(segs))
	b.SetBytes(64000)
	b.ReportAllocs()
	for b.Loop() {
		reset()
		out = offload.Coalesce(segs, off, out[:0])
	}
}
