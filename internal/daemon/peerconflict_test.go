package daemon

import (
	"maps"
	"net/netip"
	"testing"

	"github.com/vrouter/vrouter/cluster"
)

func TestPeerConflicts(t *testing.T) {
	node := func(name string, key byte, overlay string, self bool, state cluster.NodeState) cluster.Node {
		return cluster.Node{Name: name, Self: self, State: state,
			Meta: cluster.NodeMeta{WGPublicKey: [32]byte{key}, Overlay: netip.MustParseAddr(overlay)}}
	}
	alive := cluster.StateAlive
	nodes := []cluster.Node{
		node("self", 1, "100.64.0.1", true, alive),
		node("ok", 2, "100.64.0.2", false, alive),
		node("copy-a", 3, "100.64.0.3", false, alive), // a state dir copied to a second host
		node("copy-b", 3, "100.64.0.4", false, alive),
		node("thief", 4, "100.64.0.1", false, alive), // advertises our overlay address
		node("mine", 1, "100.64.0.9", false, alive),  // advertises our key
		node("same-ov-a", 5, "100.64.0.7", false, alive),
		node("same-ov-b", 6, "100.64.0.7", false, alive),
		node("dead", 2, "100.64.0.2", false, cluster.StateDead), // does not count
		// A suspect twin still holds its identity: a missed probe must not
		// let the other copy back in.
		node("twin-a", 7, "100.64.0.10", false, alive),
		node("twin-b", 7, "100.64.0.11", false, cluster.StateSuspect),
	}
	want := map[string]string{
		"copy-a": conflictWGKey, "copy-b": conflictWGKey,
		"thief": conflictOverlay, "mine": conflictWGKey,
		"same-ov-a": conflictOverlay, "same-ov-b": conflictOverlay,
		"twin-a": conflictWGKey, "twin-b": conflictWGKey,
	}
	holders := map[netip.Addr]string{}
	for _, n := range nodes {
		if n.State == alive || n.State == cluster.StateSuspect {
			holders[n.Meta.Overlay] = n.Name
		}
	}
	holders[netip.MustParseAddr("100.64.0.1")] = "self"
	holds := func(a netip.Addr) (string, bool) { h, ok := holders[a]; return h, ok }
	if got := peerConflicts(nodes, holds); !maps.Equal(got, want) {
		t.Errorf("peerConflicts = %v\nwant %v", got, want)
	}
	// A node advertising an address another node holds the claim of, or
	// nobody does, is left out on receipt.
	holders[netip.MustParseAddr("100.64.0.2")] = "copy-a"
	delete(holders, netip.MustParseAddr("100.64.0.4"))
	want["ok"] = conflictNotHeld
	if got := peerConflicts(nodes, holds); !maps.Equal(got, want) {
		t.Errorf("with claims held elsewhere: peerConflicts = %v\nwant %v", got, want)
	}
}
