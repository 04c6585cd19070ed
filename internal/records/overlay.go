package records

import (
	"encoding/binary"
	"hash/fnv"
	"net/netip"
	"strconv"
	"strings"

	"github.com/vrouter/vrouter/cluster"
)

// Overlay-address claims:
//
//	o/<addr>   value: the node's name; owned by that node
//
// A node's overlay address is the first of its candidates (OverlayCandidate;
// the first is its name's hash) whose claim it wins (the store's first-claim
// rule). A node that loses its address to an earlier claim moves to its
// next free candidate. Peers accept a node's advertised overlay address only
// while the winning claim of it is that node's own (OverlayHolder): a node
// whose metadata names an address it does not hold is left out of the
// overlay.

// OverlayClaimPrefix is the prefix of the overlay-address claims.
const OverlayClaimPrefix = "o/"

// OverlayCandidates is how many overlay addresses a node may try.
const OverlayCandidates = 16

// OverlayKey is the key of the claim of addr.
func OverlayKey(addr netip.Addr) string { return OverlayClaimPrefix + addr.String() }

// ParseOverlayKey returns the address of an overlay claim key: only the
// canonical spelling of an address of OverlayPrefix counts.
func ParseOverlayKey(key string) (netip.Addr, bool) {
	s, ok := strings.CutPrefix(key, OverlayClaimPrefix)
	if !ok {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.String() != s || !OverlayPrefix.Contains(a) {
		return netip.Addr{}, false
	}
	return a, true
}

// OverlayCandidate is the i-th overlay address node name may claim: its
// name's hash first (OverlayAddr), then hashes of the name and i.
func OverlayCandidate(name string, i int) netip.Addr {
	if i == 0 {
		return OverlayAddr(name)
	}
	h := fnv.New32a()
	h.Write([]byte(name + "\x00" + strconv.Itoa(i)))
	host := h.Sum32() & (1<<22 - 1)
	if host == 0 || host == 1<<22-1 {
		host = 1
	}
	base := OverlayPrefix.Addr().As4()
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], binary.BigEndian.Uint32(base[:])|host)
	return netip.AddrFrom4(b)
}

// OverlayHolder returns the node whose claim of addr wins: its owner, if
// the claim names its owner. false: nobody holds addr.
func OverlayHolder(st *cluster.Store, addr netip.Addr) (string, bool) {
	w, ok := st.Winner(OverlayKey(addr))
	if !ok || string(w.Value) != w.Owner {
		return "", false
	}
	return w.Owner, true
}

// ClaimOverlay keeps this node's claim of its overlay address cur and
// returns the address it should use: cur while it wins cur's claim (or
// nobody else claims it), else its first candidate nobody holds, claimed.
// moved is true when that is not cur; the caller re-advertises it.
func ClaimOverlay(st *cluster.Store, self string, cur netip.Addr) (addr netip.Addr, moved bool) {
	key := OverlayKey(cur)
	if _, mine := st.Get(self, key); !mine {
		st.Put(key, []byte(self))
	}
	if holder, ok := OverlayHolder(st, cur); !ok || holder == self {
		return cur, false
	}
	for i := range OverlayCandidates {
		a := OverlayCandidate(self, i)
		if a == cur {
			continue
		}
		if _, held := st.Winner(OverlayKey(a)); held {
			continue
		}
		st.Delete(key)
		st.Put(OverlayKey(a), []byte(self))
		return a, true
	}
	return cur, false
}
