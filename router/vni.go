package router

import (
	"errors"
	"fmt"
)

// The 24-bit VNI space is split in two halves so that an app's egress
// traffic can never land in a private network's table: a PN's own VNI has
// bit 23 clear, an egress VNI (one per app and network, packet path 5) has
// it set. VNI 0 carries the overlay probes.
const (
	// EgressVNIBit is set in every egress VNI and in no PN VNI.
	EgressVNIBit uint32 = 1 << 23
	// MaxVNI is the largest VNI VXLAN can carry.
	MaxVNI uint32 = 1<<24 - 1
)

// IsNetworkVNI reports whether v is in the half of the VNI space of the
// private networks' own tables (1..2^23-1).
func IsNetworkVNI(v uint32) bool { return v != probeVNI && v < EgressVNIBit }

// IsEgressVNI reports whether v is in the half of the VNI space of
// dedicated egress (2^23..2^24-1).
func IsEgressVNI(v uint32) bool { return v&EgressVNIBit != 0 && v <= MaxVNI }

// ErrVNIOwned is wrapped by AddPort, SetRemote, SetLocal and
// SetEgressReturn when the VNI's table belongs to another network: two
// networks never share a table, whatever the caller believes their VNIs
// are. Each refusal is counted (Stats.Counters["vni_owner_refused"]).
var ErrVNIOwned = errors.New("VNI belongs to another network")

// ownedTableLocked returns the table of vni, creating it for owner if
// there is none; it refuses (and counts) when the table belongs to another
// owner. Callers hold r.state.
func (r *Router) ownedTableLocked(vni uint32, owner string) (*table, error) {
	if owner == "" {
		return nil, fmt.Errorf("VNI %d: no network id", vni)
	}
	t := r.state.networks[vni]
	if t == nil {
		t = &table{vni: vni, owner: owner}
		r.state.networks[vni] = t
		r.publishNetworks()
		return t, nil
	}
	if t.owner != owner {
		r.vniRefused.Add(1)
		return nil, fmt.Errorf("VNI %d is %s's, not %s's: %w", vni, t.owner, owner, ErrVNIOwned)
	}
	return t, nil
}

// VNIOwner returns the id of the network whose table has VNI vni on this
// node, or "" when there is none.
func (r *Router) VNIOwner(vni uint32) string {
	r.state.Lock()
	defer r.state.Unlock()
	if t := r.state.networks[vni]; t != nil {
		return t.owner
	}
	return ""
}
