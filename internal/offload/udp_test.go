package offload_test

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"

	"github.com/vrouter/vrouter/internal/offload"
	"github.com/vrouter/vrouter/internal/offload/offloadtest"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// withHdr puts pkt behind its virtio-net header in a buffer with headroom
// off and capacity 65535.
func withHdr(hdr [10]byte, pkt []byte) []byte {
	b := withRoom(pkt)
	copy(b[off-offload.HdrLen:off], hdr[:])
	return b
}

// partials returns n datagrams of flow u (checksum left to the device),
// each with its header, IDs counting up.
func partials(u offloadtest.UDP, n int) [][]byte {
	var out [][]byte
	for k := range n {
		v := u
		v.ID += uint16(k)
		v.Fill = byte(k)
		out = append(out, withHdr(offloadtest.UDPPartial(v)))
	}
	return out
}

// segmentUDP does what the receiving kernel does with a UDP super-packet
// (__udp_gso_segment): datagrams of gso_size payload bytes with their own
// lengths and complete checksums.
func segmentUDP(t *testing.T, p []byte, h offload.Hdr) [][]byte {
	t.Helper()
	const hl = 28
	if h.GSOType != offload.GSOUDPL4 || h.Flags != offload.NeedsCsum || h.HdrLen != hl || h.CsumStart != 20 || h.CsumOffset != 6 {
		t.Fatalf("header %+v is not a UDP super-packet's", h)
	}
	ip := header.IPv4(p)
	if ip.CalculateChecksum() != 0xffff || int(ip.TotalLength()) != len(p) {
		t.Fatal("super-packet's IP header is wrong")
	}
	udp := header.UDP(p[20:])
	if int(udp.Length()) != len(p)-20 {
		t.Fatalf("UDP length %d, want %d", udp.Length(), len(p)-20)
	}
	if udp.Checksum() != header.PseudoHeaderChecksum(header.UDPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), udp.Length()) {
		t.Error("UDP checksum field is not the pseudo-header sum over the whole length")
	}
	var segs [][]byte
	for lo := hl; lo < len(p); lo += int(h.GSOSize) {
		hi := min(lo+int(h.GSOSize), len(p))
		s := append(append([]byte(nil), p[:hl]...), p[lo:hi]...)
		sip := header.IPv4(s)
		sip.SetTotalLength(uint16(len(s)))
		sip.SetChecksum(0)
		sip.SetChecksum(^sip.CalculateChecksum())
		su := header.UDP(s[20:])
		su.SetLength(uint16(len(s) - 20))
		su.SetChecksum(0)
		sum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, sip.SourceAddress(), sip.DestinationAddress(), su.Length())
		su.SetChecksum(^checksum.Checksum(s[20:], sum))
		segs = append(segs, s)
	}
	return segs
}

// sameDatagram compares two datagrams but for the IP ID and the IP
// checksum (with DF set the kernel numbers segments its own way).
func sameDatagram(a, b []byte) bool {
	if len(a) != len(b) || len(a) < 28 {
		return false
	}
	return bytes.Equal(a[:4], b[:4]) && bytes.Equal(a[6:10], b[6:10]) && bytes.Equal(a[12:], b[12:])
}

func TestCoalesceUDPRoundTrip(t *testing.T) {
	flow := offloadtest.UDP{Src: "10.240.0.2", Dst: "10.240.0.3", Payload: 64, ID: 7}
	for _, tt := range []struct {
		name  string
		batch func() [][]byte
	}{
		{"partial checksums", func() [][]byte { return partials(flow, 16) }},
		{"complete checksums, shorter last", func() [][]byte {
			var b [][]byte
			for k := range 5 {
				v := flow
				v.Fill, v.ID = byte(k), flow.ID+uint16(k)
				if k == 4 {
					v.Payload = 10
				}
				b = append(b, withRoom(offloadtest.UDPPacket(v)))
			}
			return b
		}},
		{"no DF, IDs in sequence", func() [][]byte {
			v := flow
			v.NoDF = true
			return partials(v, 4)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			batch := tt.batch()
			var want [][]byte
			for _, b := range batch {
				p := append([]byte(nil), b[off:]...)
				if h := offload.Decode(b[off-offload.HdrLen:]); h.Flags&offload.NeedsCsum != 0 {
					if !offload.CompleteChecksum(p, h) {
						t.Fatal("test datagram's checksum does not complete")
					}
				}
				want = append(want, p)
			}
			out := offload.CoalesceUDP(batch, off, nil)
			if len(out) != 1 {
				t.Fatalf("%d packets, want 1", len(out))
			}
			h := offload.Decode(out[0][off-offload.HdrLen:])
			if int(h.GSOSize) != flow.Payload {
				t.Errorf("gso_size %d, want %d", h.GSOSize, flow.Payload)
			}
			got := segmentUDP(t, out[0][off:], h)
			if len(got) != len(want) {
				t.Fatalf("%d datagrams after segmentation, want %d", len(got), len(want))
			}
			for k := range got {
				if !sameDatagram(got[k], want[k]) || !offloadtest.ValidUDP(got[k]) {
					t.Errorf("datagram %d differs after the round trip:\n got %x\nwant %x", k, got[k], want[k])
				}
			}
		})
	}
}

func TestCoalesceUDPLeavesAlone(t *testing.T) {
	flow := offloadtest.UDP{Src: "10.240.0.2", Dst: "10.240.0.3", Payload: 100}
	other := offloadtest.UDP{Src: "10.240.0.2", Dst: "10.240.0.3", DstPort: 53, Payload: 100}
	tcpHdr, tcpSuper := offloadtest.Super(offloadtest.TCP{Src: "10.240.0.2", Dst: "10.240.0.3", Payload: 3000}, 1000)
	for _, tt := range []struct {
		name  string
		batch func() [][]byte
		want  []int // datagrams per output packet (0: not UDP)
	}{
		{"other port between", func() [][]byte {
			s := partials(flow, 4)
			return [][]byte{s[0], s[1], partials(other, 1)[0], s[2], s[3]}
		}, []int{2, 1, 2}},
		{"TCP super-packet between keeps its header", func() [][]byte {
			s := partials(flow, 4)
			return [][]byte{s[0], s[1], withHdr(tcpHdr, tcpSuper), s[2], s[3]}
		}, []int{2, 0, 2}},
		{"bad checksum", func() [][]byte {
			var b [][]byte
			for range 4 {
				b = append(b, withRoom(offloadtest.UDPPacket(flow)))
			}
			b[1][off+50] ^= 0xff
			return b
		}, []int{1, 1, 2}},
		{"shorter ends the run", func() [][]byte {
			s := partials(flow, 2)
			v := flow
			v.Payload = 50
			return append(append(s, partials(v, 1)...), partials(flow, 2)...)
		}, []int{3, 2}},
		{"larger does not join", func() [][]byte {
			v := flow
			v.Payload = 150
			return append(partials(flow, 2), partials(v, 2)...)
		}, []int{2, 2}},
		{"no room to append", func() [][]byte {
			s := partials(flow, 3)
			s[0] = s[0][:len(s[0]):len(s[0])]
			return s
		}, []int{1, 2}},
		{"no DF, IDs out of sequence", func() [][]byte {
			v := flow
			v.NoDF = true
			s := partials(v, 3)
			binary.BigEndian.PutUint16(s[2][off+4:], 99)
			header.IPv4(s[2][off:]).SetChecksum(0)
			header.IPv4(s[2][off:]).SetChecksum(^header.IPv4(s[2][off:]).CalculateChecksum())
			return s
		}, []int{2, 1}},
		{"at most 64 per super-packet", func() [][]byte { return partials(flow, 70) }, []int{64, 6}},
		{"fragment, empty, not IPv4", func() [][]byte {
			frag := offloadtest.UDPPacket(flow)
			header.IPv4(frag).SetFlagsFragmentOffset(header.IPv4FlagMoreFragments, 0)
			empty := offloadtest.UDPPacket(offloadtest.UDP{Src: "10.240.0.2", Dst: "10.240.0.3"})
			return [][]byte{withRoom(frag), withRoom(frag), withRoom(empty), withRoom(empty), withRoom([]byte{0x60, 0, 0, 0})}
		}, []int{1, 1, 1, 1, 0}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			batch := tt.batch()
			hdrs := make(map[*byte][10]byte)
			for _, b := range batch {
				hdrs[&b[0]] = [10]byte(b[off-offload.HdrLen : off])
			}
			out := offload.CoalesceUDP(batch, off, nil)
			var got []int
			for _, p := range out {
				h := offload.Decode(p[off-offload.HdrLen:])
				switch {
				case h.GSOType == offload.GSOUDPL4:
					got = append(got, (len(p)-off-28+int(h.GSOSize)-1)/int(h.GSOSize))
					continue
				case len(p) > off+9 && p[off+9] == uint8(header.UDPProtocolNumber):
					got = append(got, 1)
				default:
					got = append(got, 0)
				}
				if [10]byte(p[off-offload.HdrLen:off]) != hdrs[&p[0]] {
					t.Errorf("a packet left alone lost its header")
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("runs %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCoalesceUDPAllocs(t *testing.T) {
	batch := partials(offloadtest.UDP{Src: "10.240.0.2", Dst: "10.240.0.3", Payload: 64}, 16)
	lens := make([]int, len(batch))
	for i, b := range batch {
		lens[i] = len(b)
	}
	head := append([]byte(nil), batch[0][:off+28]...)
	out := make([][]byte, 0, len(batch))
	if a := testing.AllocsPerRun(50, func() {
		for i := range batch {
			batch[i] = batch[i][:lens[i]]
		}
		copy(batch[0], head)
		out = offload.CoalesceUDP(batch, off, out[:0])
		if len(out) != 1 {
			t.Fatalf("%d packets", len(out))
		}
	}); a != 0 {
		t.Errorf("CoalesceUDP allocates %v times", a)
	}
}

// FuzzCoalesceUDP: whatever a container writes, CoalesceUDP never panics,
// keeps every datagram's payload in order, and what it merges segments
// back into valid datagrams.
func FuzzCoalesceUDP(f *testing.F) {
	hdr, pkt := offloadtest.UDPPartial(offloadtest.UDP{Src: "10.240.0.2", Dst: "10.240.0.3", Payload: 64})
	f.Add(append(hdr[:], pkt...), uint8(3), uint8(len(hdr)+len(pkt)))
	f.Fuzz(func(t *testing.T, b []byte, copies, cut uint8) {
		// The input, cut into header+packet pieces, each repeated.
		var batch [][]byte
		for len(b) > offload.HdrLen && len(batch) < 100 {
			n := min(len(b), int(cut)+offload.HdrLen+1)
			for range int(copies%8) + 1 {
				buf := withRoom(b[offload.HdrLen:n])
				copy(buf[off-offload.HdrLen:off], b[:offload.HdrLen])
				batch = append(batch, buf)
			}
			b = b[n:]
		}
		var payload int
		lens := make(map[*byte]int)
		for _, p := range batch {
			payload += len(p) - off
			lens[&p[0]] = len(p)
		}
		out := offload.CoalesceUDP(batch, off, nil)
		var got int
		for _, p := range out {
			if len(p) == lens[&p[0]] {
				got += len(p) - off // left alone
				continue
			}
			h := offload.Decode(p[off-offload.HdrLen:])
			segs := segmentUDP(t, p[off:], h)
			got += len(segs) * 28
			for _, s := range segs {
				got += len(s) - 28
				if !offloadtest.ValidUDP(s) {
					t.Fatal("merged datagram invalid")
				}
			}
		}
		if got != payload {
			t.Fatalf("%d bytes out, %d in", got, payload)
		}
	})
}

func BenchmarkCoalesceUDP(b *testing.B) {
	batch := partials(offloadtest.UDP{Src: "10.240.0.2", Dst: "10.240.0.3", Payload: 64}, 16)
	lens := make([]int, len(batch))
	for i, p := range batch {
		lens[i] = len(p)
	}
	head := append([]byte(nil), batch[0][:off+28]...)
	out := make([][]byte, 0, len(batch))
	b.ReportAllocs()
	for b.Loop() {
		for i := range batch {
			batch[i] = batch[i][:lens[i]]
		}
		copy(batch[0], head)
		out = offload.CoalesceUDP(batch, off, out[:0])
	}
}
