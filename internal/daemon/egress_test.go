package daemon

import (
	"net/netip"
	"strings"
	"testing"
)

func TestCheckEgressIPs(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	if err := checkEgressIPs(nil); err != nil {
		t.Fatalf("no egress IPs: %v", err)
	}
	if err := checkEgressIPs([]netip.Addr{lo, netip.MustParseAddr("127.0.0.2")}); err != nil {
		t.Fatalf("127.0.0.1 and 127.0.0.2: %v", err)
	}
	for _, tc := range []struct {
		ips  []netip.Addr
		want string
	}{
		// TEST-NET-2: documentation space, never configured on a host.
		{[]netip.Addr{netip.MustParseAddr("198.51.100.77")}, "not an address of this host"},
	} {
		err := checkEgressIPs(tc.ips)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error containing %q", tc.ips, err, tc.want)
		}
	}
}

// TestGatewayMeta: egress IPs travel in the node's gossip metadata and show
// in peers; an egress IP the host lacks stops the daemon from starting.
func TestGatewayMeta(t *testing.T) {
	td := startDaemonWith(t, func(c *Config) { c.EgressIPs = []netip.Addr{netip.MustParseAddr("127.0.0.1")} })
	ps := td.peers()
	if len(ps) != 1 || len(ps[0].EgressIPs) != 1 || ps[0].EgressIPs[0] != "127.0.0.1" {
		t.Fatalf("peers = %+v", ps)
	}
	_, err := New(Config{Name: "x", StateDir: t.TempDir(), OpenPort: (&fakePorts{}).open,
		EgressIPs: []netip.Addr{netip.MustParseAddr("198.51.100.77")}})
	if err == nil || !strings.Contains(err.Error(), "198.51.100.77") {
		t.Fatalf("New with a foreign egress IP: %v", err)
	}
}
