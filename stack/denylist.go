package stack

import (
	"net/netip"
	"sync/atomic"
)

// DenyList is a set of destinations node egress refuses that can be
// replaced while stacks use it: the daemon puts the host's own addresses
// in it and replaces them when the host's addresses change. Reads (one per
// new flow) take no lock.
type DenyList struct {
	set atomic.Pointer[map[netip.Addr]struct{}]
}

// NewDenyList returns a list holding addrs.
func NewDenyList(addrs []netip.Addr) *DenyList {
	d := new(DenyList)
	d.Set(addrs)
	return d
}

// Set replaces the list's addresses with addrs.
func (d *DenyList) Set(addrs []netip.Addr) {
	m := make(map[netip.Addr]struct{}, len(addrs))
	for _, a := range addrs {
		m[a.Unmap()] = struct{}{}
	}
	d.set.Store(&m)
}

// Has reports whether a is in the list; false on a nil list.
func (d *DenyList) Has(a netip.Addr) bool {
	if d == nil {
		return false
	}
	_, ok := (*d.set.Load())[a.Unmap()]
	return ok
}

// Len is the number of addresses in the list.
func (d *DenyList) Len() int {
	if d == nil {
		return 0
	}
	return len(*d.set.Load())
}
