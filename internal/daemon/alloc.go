package daemon

import (
	"math/bits"
	"net/netip"

	"github.com/vrouter/vrouter/router"
)

// hostSlots is the number of addresses in 10.240.0.0/22; index 0 (network)
// and 1023 (broadcast) are never handed out, which leaves 1022.
const hostSlots = 1024

// addrSet is the set of addresses in use in one private network. A bitmap
// keeps "lowest free" cheap and the structure small for networks that hold
// a handful of containers.
type addrSet struct {
	used  [hostSlots / 64]uint64
	count int
}

// take marks a; false if it is already in use or not a host address.
func (s *addrSet) take(a netip.Addr) bool {
	i, ok := router.HostIndex(a)
	if !ok || s.used[i/64]&(1<<(i%64)) != 0 {
		return false
	}
	s.used[i/64] |= 1 << (i % 64)
	s.count++
	return true
}

func (s *addrSet) release(a netip.Addr) {
	i, ok := router.HostIndex(a)
	if !ok || s.used[i/64]&(1<<(i%64)) == 0 {
		return
	}
	s.used[i/64] &^= 1 << (i % 64)
	s.count--
}

// lowestFree returns the lowest host address not in use.
func (s *addrSet) lowestFree() (netip.Addr, bool) {
	for w, word := range s.used {
		free := ^word
		if w == 0 {
			free &^= 1 // network address
		}
		if w == len(s.used)-1 {
			free &^= 1 << 63 // broadcast address
		}
		if free != 0 {
			return router.AddrOf(w*64 + bits.TrailingZeros64(free)), true
		}
	}
	return netip.Addr{}, false
}

// lowestFreeNumber returns the smallest positive integer in neither set.
func lowestFreeNumber(used, taken map[int]bool) int {
	n := 1
	for used[n] || taken[n] {
		n++
	}
	return n
}
