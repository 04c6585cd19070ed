package stack

// TakesLarge implements router.LargeLocal: a container's TCP super-packets
// (up to 64 KiB, checksum complete) reach the stack whole. gVisor's TCP
// takes a segment larger than the MSS it advertised like any other, and
// one segment through the stack instead of forty-odd is most of the cost
// of node egress.
func (s *Stack) TakesLarge() bool { return true }
