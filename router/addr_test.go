package router

import (
	"net/netip"
	"testing"
)

func TestHostIndex(t *testing.T) {
	tests := []struct {
		addr string
		idx  int
		ok   bool
	}{
		{"10.240.0.1", 1, true},
		{"10.240.0.255", 255, true},
		{"10.240.1.0", 256, true},
		{"10.240.3.254", 1022, true},
		{"10.240.0.0", 0, false},      // network address
		{"10.240.3.255", 1023, false}, // broadcast address
		{"10.240.4.1", 0, false},
		{"10.241.0.1", 0, false},
		{"11.240.0.1", 0, false},
		{"169.254.20.10", 0, false},
		{"::1", 0, false},
		{"::ffff:10.240.0.1", 0, false}, // IPv4-mapped IPv6 is not IPv4
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			a := netip.MustParseAddr(tt.addr)
			idx, ok := HostIndex(a)
			if ok != tt.ok || (ok && idx != tt.idx) {
				t.Errorf("HostIndex(%s) = %d, %v; want %d, %v", a, idx, ok, tt.idx, tt.ok)
			}
			if IsHost(a) != tt.ok {
				t.Errorf("IsHost(%s) = %v, want %v", a, !tt.ok, tt.ok)
			}
		})
	}
	if _, ok := HostIndex(netip.Addr{}); ok {
		t.Error("HostIndex(zero Addr) is ok")
	}
}

func TestAddrOf(t *testing.T) {
	for i := 0; i < tableSize; i++ {
		a := AddrOf(i)
		if !NetworkPrefix.Contains(a) {
			t.Fatalf("AddrOf(%d) = %s, outside %s", i, a, NetworkPrefix)
		}
		idx, ok := HostIndex(a)
		if ok != (i >= 1 && i <= NumHosts) {
			t.Errorf("HostIndex(AddrOf(%d)=%s) ok = %v", i, a, ok)
		}
		if ok && idx != i {
			t.Errorf("HostIndex(AddrOf(%d)) = %d", i, idx)
		}
	}
	for _, i := range []int{-1, tableSize, 1 << 20} {
		if a := AddrOf(i); a.IsValid() {
			t.Errorf("AddrOf(%d) = %s, want the zero Addr", i, a)
		}
	}
	if got := AddrOf(1022).String(); got != "10.240.3.254" {
		t.Errorf("AddrOf(1022) = %s", got)
	}
}

func TestIsBroadcastOrMulticast(t *testing.T) {
	tests := map[string]bool{
		"255.255.255.255": true,
		"224.0.0.251":     true,
		"239.255.255.250": true,
		"10.240.0.0":      true,
		"10.240.3.255":    true,
		"10.240.0.1":      false,
		"10.240.3.254":    false,
		"10.240.4.0":      false, // outside the PN: not our broadcast
		"8.8.8.8":         false,
	}
	for addr, want := range tests {
		if got := isBroadcastOrMulticast(netip.MustParseAddr(addr).As4()); got != want {
			t.Errorf("isBroadcastOrMulticast(%s) = %v, want %v", addr, got, want)
		}
	}
}
