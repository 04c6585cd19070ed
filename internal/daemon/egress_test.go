package daemon

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/egress"
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

const (
	egressAppA = "ap-00000000-0000-4000-8000-00000000000a"
	egressAppB = "ap-00000000-0000-4000-8000-00000000000b"
	egressAppC = "ap-00000000-0000-4000-8000-00000000000c"
)

var assignT0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func mustAddrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

// rowString renders a show row as IP@GATEWAY:HEALTH[:active][:primary]
// per IP.
func rowString(r control.EgressApp) string {
	var parts []string
	for _, ip := range r.IPs {
		s := fmt.Sprintf("%s@%s:%s", ip.IP, ip.Gateway, ip.Health)
		if ip.Active {
			s += ":active"
		}
		if ip.Primary {
			s += ":primary"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

func (td *testDaemon) egressTargets(app string) []egress.Target {
	return td.egress.Assigner.Targets(app)
}
func (td *testDaemon) localEgress() map[string]netip.Addr { return td.egress.Assigner.Local() }
