package router

import (
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

func TestBuildICMPUnreachable(t *testing.T) {
	tests := []struct {
		name string
		orig []byte
		code header.ICMPv4Code
		mtu  uint16
	}{
		{"host unreachable", UDP4("10.240.0.1", "10.240.0.9"), header.ICMPv4HostUnreachable, 0},
		{"fragmentation needed", Pkt4("10.240.0.1", "10.240.0.9", PktOpts{Payload: 1400, DF: true}), header.ICMPv4FragmentationNeeded, 1390},
		{"header only", UDP4("10.240.0.1", "10.240.0.9")[:20], header.ICMPv4HostUnreachable, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := tt.orig
			if len(orig) == 20 {
				orig = append([]byte(nil), orig...)
				header.IPv4(orig).SetTotalLength(20)
			}
			p, _, ok := parseIPv4(orig)
			if !ok {
				t.Fatal("parse failed")
			}
			b := make([]byte, icmpMaxSize+10)
			for i := range b {
				b[i] = 0xa5 // stale bytes must not leak into the message
			}
			n := buildICMPUnreachable(b, DefaultResolver.As4(), p, tt.code, tt.mtu, 42)
			if n > icmpMaxSize {
				t.Fatalf("ICMP error of %d bytes exceeds %d", n, icmpMaxSize)
			}
			ic := CheckICMPUnreachable(t, b[:n], "10.240.0.1", tt.code, orig)
			if ic.MTU() != tt.mtu {
				t.Errorf("MTU field = %d, want %d", ic.MTU(), tt.mtu)
			}
			ip := header.IPv4(b[:n])
			if ip.TTL() != icmpTTL || ip.ID() != 42 || ip.Flags() != 0 || ip.HeaderLength() != 20 {
				t.Errorf("ttl %d id %d flags %d ihl %d", ip.TTL(), ip.ID(), ip.Flags(), ip.HeaderLength())
			}
		})
	}
}

func TestBuildICMPAllocs(t *testing.T) {
	p, _, _ := parseIPv4(UDP4("10.240.0.1", "10.240.0.9"))
	b := make([]byte, icmpMaxSize)
	src := DefaultResolver.As4()
	if allocs := testing.AllocsPerRun(100, func() {
		buildICMPUnreachable(b, src, p, header.ICMPv4HostUnreachable, 0, 1)
	}); allocs != 0 {
		t.Errorf("buildICMPUnreachable allocates %v times", allocs)
	}
}
