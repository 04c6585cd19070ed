package router

import "net/netip"

// NetworkPrefix is the address range of every private network. All PNs use
// the same range; they are told apart by their VNI, never by address.
var NetworkPrefix = netip.MustParsePrefix("10.240.0.0/22")

// DefaultResolver is the address containers send DNS queries to. The router
// also uses it as the source of the ICMP errors it generates, so that a
// container sees them come from a known, reachable address.
var DefaultResolver = netip.MustParseAddr("169.254.20.10")

// NumHosts is how many containers fit in one private network
// (10.240.0.1–10.240.3.254).
const NumHosts = 1022

// tableSize is the number of addresses in NetworkPrefix; the forwarding
// table is indexed by an address's offset in the prefix.
const tableSize = 1024

// HostIndex returns a's offset in NetworkPrefix (1..1022) and reports
// whether a is a usable host address: the network address 10.240.0.0, the
// broadcast address 10.240.3.255 and anything outside the prefix are not.
func HostIndex(a netip.Addr) (int, bool) {
	if !a.Is4() {
		return 0, false
	}
	i, inNet := indexOf(a.As4())
	return i, inNet && isHostIndex(i)
}

// IsHost reports whether a is a usable host address of NetworkPrefix.
func IsHost(a netip.Addr) bool {
	_, ok := HostIndex(a)
	return ok
}

// AddrOf is the inverse of HostIndex: the address at offset i of
// NetworkPrefix. It returns the zero Addr when i is outside 0..1023.
func AddrOf(i int) netip.Addr {
	if i < 0 || i >= tableSize {
		return netip.Addr{}
	}
	return netip.AddrFrom4([4]byte{10, 240, byte(i >> 8), byte(i)})
}

// indexOf returns the offset of a in 10.240.0.0/22 and whether a is inside
// it. It works on the raw bytes so the packet path needs no netip values.
func indexOf(a [4]byte) (int, bool) {
	if a[0] != 10 || a[1] != 240 || a[2]&^3 != 0 {
		return 0, false
	}
	return int(a[2])<<8 | int(a[3]), true
}

func isHostIndex(i int) bool { return i > 0 && i < tableSize-1 }

// isBroadcastOrMulticast reports destinations the router never forwards to a
// single port: limited broadcast, multicast (224.0.0.0/4) and the network
// and broadcast addresses of the PN range.
func isBroadcastOrMulticast(a [4]byte) bool {
	if a == [4]byte{255, 255, 255, 255} || a[0]&0xf0 == 0xe0 {
		return true
	}
	i, in := indexOf(a)
	return in && !isHostIndex(i)
}
