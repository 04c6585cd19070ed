package router

import (
	"encoding/binary"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

var (
	testNodeA = [4]byte{100, 64, 0, 1}
	testNodeB = [4]byte{100, 64, 0, 2}
)

// encapTest returns a buffer holding pkt encapsulated from A to B in VNI
// vni, with Headroom-VXLANOverhead spare bytes in front (as in the overlay
// buffers), and the frame inside it.
func encapTest(pkt []byte, vni uint32) []byte {
	b := make([]byte, Headroom+len(pkt))
	copy(b[Headroom:], pkt)
	frame := b[Headroom-VXLANOverhead:]
	encodeVXLAN(frame, testNodeA, testNodeB, vni)
	return frame
}

func TestVXLANEncode(t *testing.T) {
	pkt := UDP4("10.240.0.1", "10.240.0.2")
	frame := encapTest(pkt, 0xabcdef)
	be := binary.BigEndian

	ip := header.IPv4(frame)
	if !ip.IsValid(len(frame)) || !ip.IsChecksumValid() || ip.HeaderLength() != 20 {
		t.Fatalf("bad outer IPv4: % x", frame[:20])
	}
	if int(ip.TotalLength()) != len(pkt)+VXLANOverhead || ip.Flags() != header.IPv4FlagDontFragment ||
		ip.TransportProtocol() != header.UDPProtocolNumber || ip.TTL() != vxlanTTL {
		t.Errorf("outer IPv4 fields: len %d flags %d proto %d ttl %d", ip.TotalLength(), ip.Flags(), ip.Protocol(), ip.TTL())
	}
	if [4]byte(frame[12:16]) != testNodeA || [4]byte(frame[16:20]) != testNodeB {
		t.Errorf("outer addresses % x", frame[12:20])
	}
	u := header.UDP(frame[offUDP:])
	if u.SourcePort() < 49152 || u.DestinationPort() != VXLANPort || u.Checksum() != 0 ||
		int(u.Length()) != len(frame)-offUDP {
		t.Errorf("UDP: %d → %d len %d csum %#x", u.SourcePort(), u.DestinationPort(), u.Length(), u.Checksum())
	}
	if got := frame[offVXLAN : offVXLAN+8]; got[0] != 0x08 || be.Uint32(got[4:])>>8 != 0xabcdef || got[1]|got[2]|got[3]|got[7] != 0 {
		t.Errorf("VXLAN header % x", got)
	}
	eth := header.Ethernet(frame[offEth:])
	if eth.DestinationAddress() != "\x02\x00\x0a\xf0\x00\x02" || eth.SourceAddress() != "\x02\x00\x0a\xf0\x00\x01" ||
		eth.Type() != header.IPv4ProtocolNumber {
		t.Errorf("Ethernet % x", frame[offEth:VXLANOverhead])
	}
	if string(frame[VXLANOverhead:]) != string(pkt) {
		t.Error("inner packet changed")
	}

	f, ok := decodeVXLAN(frame)
	if !ok || f.src != testNodeA || f.dst != testNodeB || f.vni != 0xabcdef || string(f.inner) != string(pkt) {
		t.Errorf("decode = %+v, %v", f, ok)
	}
}

func TestFlowPort(t *testing.T) {
	a := Pkt4("10.240.0.1", "10.240.0.2", PktOpts{Payload: 10})
	b := Pkt4("10.240.0.1", "10.240.0.2", PktOpts{Payload: 500, ID: 9}) // same flow, other packet
	c := Pkt4("10.240.0.1", "10.240.0.3", PktOpts{Payload: 10})
	if flowPort(a) != flowPort(b) {
		t.Error("packets of one flow get different source ports")
	}
	if flowPort(a) == flowPort(c) {
		t.Log("two flows share a source port (possible, but unlikely for these)")
	}
	for _, p := range [][]byte{a, c, Pkt4("10.240.0.1", "10.240.0.2", PktOpts{FragOff: 3})} {
		if port := flowPort(p); port < 49152 {
			t.Errorf("source port %d outside 49152–65535", port)
		}
	}
}

func TestDecodeVXLAN(t *testing.T) {
	pkt := UDP4("10.240.0.1", "10.240.0.2")
	be := binary.BigEndian
	fixCsum := func(f []byte) {
		be.PutUint16(f[10:], 0)
		be.PutUint16(f[10:], ^checksum.Checksum(f[:20], 0))
	}
	tests := []struct {
		name   string
		mutate func(f []byte) []byte
		ok     bool
	}{
		{"valid", func(f []byte) []byte { return f }, true},
		{"trailing bytes ignored", func(f []byte) []byte { return append(f, 1, 2, 3) }, true},
		{"reserved bits ignored", func(f []byte) []byte { f[offVXLAN] |= 0xf7; f[offVXLAN+7] = 1; return f }, true},
		{"empty", func(f []byte) []byte { return nil }, false},
		{"shorter than overhead", func(f []byte) []byte { return f[:VXLANOverhead-1] }, false},
		{"truncated", func(f []byte) []byte { return f[:len(f)-1] }, false},
		{"IPv6", func(f []byte) []byte { f[0] = 0x65; return f }, false},
		{"IP options", func(f []byte) []byte { f[0] = 0x46; return f }, false},
		{"total length too small", func(f []byte) []byte { be.PutUint16(f[2:], VXLANOverhead-1); fixCsum(f); return f }, false},
		{"more fragments", func(f []byte) []byte { f[6] |= 0x20; fixCsum(f); return f }, false},
		{"fragment offset", func(f []byte) []byte { f[7] = 1; fixCsum(f); return f }, false},
		{"not UDP", func(f []byte) []byte { f[9] = 6; fixCsum(f); return f }, false},
		{"bad checksum", func(f []byte) []byte { f[10] ^= 0xff; return f }, false},
		{"port 8472", func(f []byte) []byte { be.PutUint16(f[offUDP+2:], 8472); return f }, false},
		{"UDP length", func(f []byte) []byte { be.PutUint16(f[offUDP+4:], 8); return f }, false},
		{"no I flag", func(f []byte) []byte { f[offVXLAN] = 0; return f }, false},
		{"VLAN tagged", func(f []byte) []byte { be.PutUint16(f[offEth+12:], 0x8100); return f }, false},
		{"ARP", func(f []byte) []byte { be.PutUint16(f[offEth+12:], 0x0806); return f }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.mutate(append([]byte(nil), encapTest(pkt, 7)...))
			got, ok := decodeVXLAN(f)
			if ok != tc.ok {
				t.Fatalf("decode ok = %v, want %v", ok, tc.ok)
			}
			if ok && (got.vni != 7 || string(got.inner) != string(pkt)) {
				t.Errorf("decode = vni %d inner % x", got.vni, got.inner)
			}
		})
	}
}

func TestVXLANAllocs(t *testing.T) {
	frame := encapTest(UDP4("10.240.0.1", "10.240.0.2"), 7)
	allocs := testing.AllocsPerRun(100, func() {
		encodeVXLAN(frame, testNodeA, testNodeB, 7)
		if _, ok := decodeVXLAN(frame); !ok {
			t.Fatal("decode failed")
		}
	})
	if allocs != 0 {
		t.Errorf("encode+decode allocate %v times", allocs)
	}
}

func FuzzDecodeVXLAN(f *testing.F) {
	f.Add(encapTest(UDP4("10.240.0.1", "10.240.0.2"), 7))
	f.Add(encapTest(Pkt4("10.240.0.1", "10.240.0.2", PktOpts{Proto: 1, ICMPType: header.ICMPv4Echo}), 1<<24-1))
	f.Add([]byte{0x45})
	f.Add(make([]byte, VXLANOverhead))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, ok := decodeVXLAN(b)
		if !ok {
			return
		}
		total := int(binary.BigEndian.Uint16(b[2:]))
		if len(fr.inner) != total-VXLANOverhead || fr.vni > 1<<24-1 {
			t.Errorf("inner %d bytes for total %d, vni %d", len(fr.inner), total, fr.vni)
		}
		// What decodes re-encodes to the same outer headers, except the
		// fields decode ignores (reserved bits, ID, TTL, TOS, ports).
		if len(fr.inner) >= header.IPv4MinimumSize {
			c := append([]byte(nil), b[:total]...)
			encodeVXLAN(c, fr.src, fr.dst, fr.vni)
			if g, ok := decodeVXLAN(c); !ok || g.src != fr.src || g.vni != fr.vni || string(g.inner) != string(fr.inner) {
				t.Errorf("re-encoded frame decodes to %+v, %v", g, ok)
			}
		}
	})
}
