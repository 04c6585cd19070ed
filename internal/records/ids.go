package records

import (
	"encoding/binary"
	"hash/fnv"
	"net/netip"

	"github.com/vrouter/vrouter/router"
)

// Identifiers derived from names. A network's VNI is a claim (vni.go)
// whose first candidate is VNI; an egress VNI is a hash in the other half
// of the VNI space, and a collision between two of them is refused by the
// router (the table belongs to EgressNet). A node's overlay address is a
// claim (overlay.go) whose first candidate is OverlayAddr.

// VNI derives a PN's VXLAN network identifier from its id, in the PN half
// of the VNI space (router.IsNetworkVNI): an egress VNI never equals it.
func VNI(pn string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(pn))
	v := h.Sum32() & (router.EgressVNIBit - 1)
	if v == 0 {
		v = 1
	}
	return v
}

// EgressVNI derives the VNI of an app's egress traffic from one network:
// per app and network, so that at the gateway flows of networks with the
// same container addresses never share a table or a NAT. It lies in the
// egress half of the VNI space (router.IsEgressVNI), apart from every PN's
// own VNI.
func EgressVNI(app, pn string) uint32 {
	h := fnv.New32a()
	h.Write([]byte("egress\x00" + app + "\x00" + pn))
	return h.Sum32()&(router.EgressVNIBit-1) | router.EgressVNIBit
}

// EgressNet names the owner of an egress VNI's table at a gateway: the
// app's egress in one network. Two pairs whose egress VNIs collide are
// refused by the router (router.ErrVNIOwned) rather than sharing a table
// and a NAT.
func EgressNet(app, pn string) string { return "egress/" + app + "/" + pn }

// OverlayPrefix holds the nodes' overlay addresses: the outer source and
// destination of VXLAN inside WireGuard, never seen by containers.
var OverlayPrefix = netip.MustParsePrefix("100.64.0.0/10")

// OverlayAddr is the first overlay address a node claims: a hash of its
// name, so that it is stable across restarts unless another node holds it.
func OverlayAddr(name string) netip.Addr {
	h := fnv.New32a()
	h.Write([]byte(name))
	host := h.Sum32() & (1<<22 - 1)
	if host == 0 || host == 1<<22-1 {
		host = 1
	}
	base := OverlayPrefix.Addr().As4()
	v := binary.BigEndian.Uint32(base[:]) | host
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}
