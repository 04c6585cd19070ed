package egress

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/records"
)

const (
	egressAppA = "ap-00000000-0000-4000-8000-00000000000a"
	egressAppB = "ap-00000000-0000-4000-8000-00000000000b"
	egressAppC = "ap-00000000-0000-4000-8000-00000000000c"
)

func mustAddrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func testGateway(name string, addrs ...string) gatewayCandidate {
	return gatewayCandidate{Name: name, Alive: true, IPs: mustAddrs(addrs...)}
}

var assignT0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func assigned(ip, app, gateway string, minute int) assignment {
	return assignment{IP: netip.MustParseAddr(ip), App: app, Gateway: gateway, AssignedAt: assignT0.Add(time.Duration(minute) * time.Minute)}
}

func picksString(ps []records.EgressPick) string {
	var parts []string
	for _, p := range ps {
		parts = append(parts, p.IP.String()+"@"+p.Gateway)
	}
	return strings.Join(parts, " ")
}

func haveString(as []assignment) string {
	var parts []string
	for _, a := range as {
		parts = append(parts, a.IP.String()+"@"+a.Gateway)
	}
	return strings.Join(parts, " ")
}

// TestChooseEgress covers the assignment rules: two different gateways,
// one app per IP, fewest-assigned first (ties by name), lowest free IP,
// draining and dead gateways excluded, too few gateways an error,
// idempotent re-enable and the top-up of an app left with one IP.
func TestChooseEgress(t *testing.T) {
	draining := testGateway("g2", "127.0.0.4", "127.0.0.5")
	draining.Draining = true
	dead := testGateway("g2", "127.0.0.4", "127.0.0.5")
	dead.Alive = false
	tests := []struct {
		name     string
		app      string
		gws      []gatewayCandidate
		assigned []assignment
		have     string
		picks    string
		err      string
	}{
		{
			name:  "fresh app: lowest free IP on two gateways",
			app:   egressAppA,
			gws:   []gatewayCandidate{testGateway("g2", "127.0.0.5", "127.0.0.4"), testGateway("g1", "127.0.0.3", "127.0.0.2")},
			picks: "127.0.0.2@g1 127.0.0.4@g2",
		},
		{
			name:     "second app gets the other two IPs",
			app:      egressAppB,
			gws:      []gatewayCandidate{testGateway("g1", "127.0.0.2", "127.0.0.3"), testGateway("g2", "127.0.0.4", "127.0.0.5")},
			assigned: []assignment{assigned("127.0.0.2", egressAppA, "g1", 0), assigned("127.0.0.4", egressAppA, "g2", 0)},
			picks:    "127.0.0.3@g1 127.0.0.5@g2",
		},
		{
			name:     "third app: no free IP anywhere",
			app:      egressAppC,
			gws:      []gatewayCandidate{testGateway("g1", "127.0.0.2", "127.0.0.3"), testGateway("g2", "127.0.0.4", "127.0.0.5")},
			assigned: []assignment{assigned("127.0.0.2", egressAppA, "g1", 0), assigned("127.0.0.4", egressAppA, "g2", 0), assigned("127.0.0.3", egressAppB, "g1", 1), assigned("127.0.0.5", egressAppB, "g2", 1)},
			err:      "needs two gateways with a free egress IP; found 0",
		},
		{
			name:  "one gateway with many IPs is not enough",
			app:   egressAppA,
			gws:   []gatewayCandidate{testGateway("g1", "127.0.0.2", "127.0.0.3", "127.0.0.4")},
			err:   "found 1",
			picks: "",
		},
		{
			name: "fewest assigned first, then by name",
			app:  egressAppC,
			gws: []gatewayCandidate{
				testGateway("g1", "127.0.0.2", "127.0.0.3"),
				testGateway("g2", "127.0.0.4", "127.0.0.5"),
				testGateway("g3", "127.0.0.6", "127.0.0.7"),
				testGateway("g4", "127.0.0.8"),
			},
			assigned: []assignment{assigned("127.0.0.2", egressAppA, "g1", 0), assigned("127.0.0.4", egressAppA, "g2", 0), assigned("127.0.0.5", egressAppB, "g2", 1), assigned("127.0.0.6", egressAppB, "g3", 1)},
			picks:    "127.0.0.8@g4 127.0.0.3@g1",
		},
		{
			name:  "draining gateway excluded",
			app:   egressAppA,
			gws:   []gatewayCandidate{testGateway("g1", "127.0.0.2"), draining, testGateway("g3", "127.0.0.6")},
			picks: "127.0.0.2@g1 127.0.0.6@g3",
		},
		{
			name: "dead gateway excluded",
			app:  egressAppA,
			gws:  []gatewayCandidate{testGateway("g1", "127.0.0.2"), dead},
			err:  "found 1",
		},
		{
			name:     "re-enable returns the same IPs, primary first",
			app:      egressAppA,
			gws:      []gatewayCandidate{testGateway("g1", "127.0.0.2", "127.0.0.3"), testGateway("g2", "127.0.0.4", "127.0.0.5")},
			assigned: []assignment{assigned("127.0.0.4", egressAppA, "g2", 0), assigned("127.0.0.2", egressAppA, "g1", 1)},
			have:     "127.0.0.4@g2 127.0.0.2@g1",
		},
		{
			name:     "re-enable needs no free IP",
			app:      egressAppA,
			gws:      []gatewayCandidate{testGateway("g1", "127.0.0.2"), testGateway("g2", "127.0.0.4")},
			assigned: []assignment{assigned("127.0.0.2", egressAppA, "g1", 0), assigned("127.0.0.4", egressAppA, "g2", 0)},
			have:     "127.0.0.2@g1 127.0.0.4@g2",
		},
		{
			name:     "top-up on another gateway when one is gone",
			app:      egressAppA,
			gws:      []gatewayCandidate{testGateway("g1", "127.0.0.2", "127.0.0.3"), testGateway("g3", "127.0.0.6")},
			assigned: []assignment{assigned("127.0.0.2", egressAppA, "g1", 0)},
			have:     "127.0.0.2@g1",
			picks:    "127.0.0.6@g3",
		},
		{
			name:     "top-up impossible: counts the gateway the app has",
			app:      egressAppA,
			gws:      []gatewayCandidate{testGateway("g1", "127.0.0.2", "127.0.0.3")},
			assigned: []assignment{assigned("127.0.0.2", egressAppA, "g1", 0)},
			have:     "127.0.0.2@g1",
			err:      "found 1",
		},
		{
			name:     "an IP of another app is never picked",
			app:      egressAppB,
			gws:      []gatewayCandidate{testGateway("g1", "127.0.0.2"), testGateway("g2", "127.0.0.4", "127.0.0.5")},
			assigned: []assignment{assigned("127.0.0.2", egressAppA, "g1", 0)},
			err:      "found 1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			have, picks, err := chooseEgress(tt.app, tt.gws, tt.assigned)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || errCode(err) != "unavailable" {
					t.Fatalf("err = %v (code %q), want unavailable containing %q", err, errCode(err), tt.err)
				}
				if len(picks) != 0 {
					t.Fatalf("picks %s despite the error", picksString(picks))
				}
			} else if err != nil {
				t.Fatalf("err = %v", err)
			}
			if got := picksString(picks); got != tt.picks {
				t.Errorf("picks = %q, want %q", got, tt.picks)
			}
			if got := haveString(have); got != tt.have {
				t.Errorf("have = %q, want %q", got, tt.have)
			}
		})
	}
}
