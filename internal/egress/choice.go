package egress

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/records"
)

// egressIPsPerApp: every app with dedicated egress has this many IPs, each
// on a different gateway, so that one gateway's death or drain leaves it
// another.
const egressIPsPerApp = 2

// gatewayCandidate is what the choice needs to know of one gateway.
type gatewayCandidate struct {
	Name     string
	Alive    bool // memberlist says alive (not suspect, dead or left)
	Draining bool
	IPs      []netip.Addr
}

// chooseEgress applies the assignment rules for app. assigned holds every
// assignment of live gateways. It returns the app's current assignments
// (have) and the IPs still to ask for (picks), one per gateway not yet
// serving the app, so that the app ends up on egressIPsPerApp different
// gateways:
//
//   - a gateway qualifies if it is alive, not draining, does not serve the
//     app yet and has a free IP (one of its egress IPs in no assignment);
//   - gateways with the fewest assignments go first, ties by name;
//   - each gives its lowest free IP.
//
// An app that already has its IPs gets no picks (enable is idempotent); one
// left with a single gateway gets one pick (a top-up). When too few
// gateways qualify the error is a *control.Error "unavailable" and nothing
// is picked.
func chooseEgress(app string, gws []gatewayCandidate, assigned []assignment) (have []assignment, picks []records.EgressPick, err error) {
	taken := make(map[netip.Addr]bool, len(assigned))
	load := make(map[string]int)
	serving := make(map[string]bool)
	for _, a := range assigned {
		taken[a.IP] = true
		load[a.Gateway]++
		if a.App == app {
			have = append(have, a)
			serving[a.Gateway] = true
		}
	}
	sortAssignments(have)
	need := egressIPsPerApp - len(serving)
	if need <= 0 {
		return have, nil, nil
	}
	type candidate struct {
		name string
		load int
		free netip.Addr
	}
	var cands []candidate
	for _, g := range gws {
		if !g.Alive || g.Draining || serving[g.Name] {
			continue
		}
		var free netip.Addr
		for _, ip := range g.IPs {
			if !taken[ip] && (!free.IsValid() || ip.Less(free)) {
				free = ip
			}
		}
		if free.IsValid() {
			cands = append(cands, candidate{g.Name, load[g.Name], free})
		}
	}
	if len(cands) < need {
		return have, nil, control.Errorf(control.CodeUnavailable,
			"dedicated egress needs two gateways with a free egress IP; found %d", len(serving)+len(cands))
	}
	slices.SortFunc(cands, func(a, b candidate) int {
		return cmp.Or(cmp.Compare(a.load, b.load), cmp.Compare(a.name, b.name))
	})
	for _, c := range cands[:need] {
		picks = append(picks, records.EgressPick{IP: c.free, Gateway: c.name})
	}
	return have, picks, nil
}

// sortAssignments orders one app's assignments primary first: the oldest
// assignment, ties by IP.
func sortAssignments(as []assignment) {
	slices.SortFunc(as, func(a, b assignment) int {
		return cmp.Or(a.AssignedAt.Compare(b.AssignedAt), a.IP.Compare(b.IP))
	})
}
