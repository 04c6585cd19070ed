package router

import (
	"encoding/binary"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

func TestParseIPv4(t *testing.T) {
	valid := UDP4("10.240.0.1", "10.240.0.2")
	mutate := func(f func(b []byte) []byte) []byte {
		return f(append([]byte(nil), valid...))
	}
	withOptions := func() []byte {
		// IHL 6: one 4-byte option word (NOPs), total length grows by 4.
		b := make([]byte, len(valid)+4)
		copy(b, valid[:20])
		copy(b[24:], valid[20:])
		b[0] = 0x46
		b[20], b[21], b[22], b[23] = 1, 1, 1, 0
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		return b
	}
	tests := []struct {
		name    string
		pkt     []byte
		reason  counter
		ok      bool
		wantLen int
	}{
		{"valid", valid, 0, true, len(valid)},
		{"padding trimmed", mutate(func(b []byte) []byte { return append(b, 0, 0, 0, 0) }), 0, true, len(valid)},
		{"options", withOptions(), 0, true, len(valid) + 4},
		{"empty", nil, dropMalformed, false, 0},
		{"one byte v4", []byte{0x45}, dropMalformed, false, 0},
		{"ipv6", IPv6Pkt(), dropNotIPv4, false, 0},
		{"version 0", mutate(func(b []byte) []byte { b[0] = 0x05; return b }), dropNotIPv4, false, 0},
		{"ihl too small", mutate(func(b []byte) []byte { b[0] = 0x44; return b }), dropMalformed, false, 0},
		{"ihl beyond total length", mutate(func(b []byte) []byte { b[0] = 0x4f; binary.BigEndian.PutUint16(b[2:], 40); return b }), dropMalformed, false, 0},
		{"total length beyond buffer", mutate(func(b []byte) []byte { binary.BigEndian.PutUint16(b[2:], uint16(len(b)+1)); return b }), dropMalformed, false, 0},
		{"total length below header", mutate(func(b []byte) []byte { binary.BigEndian.PutUint16(b[2:], 19); return b }), dropMalformed, false, 0},
		{"truncated header", valid[:19], dropMalformed, false, 0},
		{"header only", mutate(func(b []byte) []byte { binary.BigEndian.PutUint16(b[2:], 20); return b[:20] }), 0, true, 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, reason, ok := parseIPv4(tt.pkt)
			if ok != tt.ok {
				t.Fatalf("ok = %v, want %v (reason %s)", ok, tt.ok, counterNames[reason])
			}
			if !ok {
				if reason != tt.reason {
					t.Errorf("reason = %s, want %s", counterNames[reason], counterNames[tt.reason])
				}
				return
			}
			if p.totalLen() != tt.wantLen {
				t.Errorf("totalLen = %d, want %d", p.totalLen(), tt.wantLen)
			}
			if p.src != [4]byte{10, 240, 0, 1} || p.dst != [4]byte{10, 240, 0, 2} {
				t.Errorf("src, dst = %v, %v", p.src, p.dst)
			}
		})
	}
}

func TestParseIPv4Allocs(t *testing.T) {
	b := UDP4("10.240.0.1", "10.240.0.2")
	allocs := testing.AllocsPerRun(100, func() {
		if _, _, ok := parseIPv4(b); !ok {
			t.Fatal("parse failed")
		}
	})
	if allocs != 0 {
		t.Errorf("parseIPv4 allocates %v times", allocs)
	}
}

func TestMayTriggerICMPError(t *testing.T) {
	icmp := uint8(header.ICMPv4ProtocolNumber)
	tests := []struct {
		name string
		pkt  []byte
		want bool
	}{
		{"udp", UDP4("10.240.0.1", "10.240.0.9"), true},
		{"echo request", Pkt4("10.240.0.1", "10.240.0.9", PktOpts{Proto: icmp, ICMPType: header.ICMPv4Echo}), true},
		{"echo reply", Pkt4("10.240.0.1", "10.240.0.9", PktOpts{Proto: icmp, ICMPType: header.ICMPv4EchoReply}), true},
		{"dest unreachable", Pkt4("10.240.0.1", "10.240.0.9", PktOpts{Proto: icmp, ICMPType: header.ICMPv4DstUnreachable}), false},
		{"time exceeded", Pkt4("10.240.0.1", "10.240.0.9", PktOpts{Proto: icmp, ICMPType: header.ICMPv4TimeExceeded}), false},
		{"param problem", Pkt4("10.240.0.1", "10.240.0.9", PktOpts{Proto: icmp, ICMPType: header.ICMPv4ParamProblem}), false},
		{"redirect", Pkt4("10.240.0.1", "10.240.0.9", PktOpts{Proto: icmp, ICMPType: header.ICMPv4Redirect}), false},
		{"icmp without payload", Pkt4("10.240.0.1", "10.240.0.9", PktOpts{Proto: 255})[:20], true},
		{"later fragment", Pkt4("10.240.0.1", "10.240.0.9", PktOpts{FragOff: 10}), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.pkt
			if tt.name == "icmp without payload" {
				b = append([]byte(nil), b...)
				b[9] = icmp
				binary.BigEndian.PutUint16(b[2:], 20)
				tt.want = false
			}
			p, _, ok := parseIPv4(b)
			if !ok {
				t.Fatal("parse failed")
			}
			if got := p.mayTriggerICMPError(); got != tt.want {
				t.Errorf("mayTriggerICMPError = %v, want %v", got, tt.want)
			}
		})
	}
}
