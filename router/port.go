package router

// Port is one container's packet device as the router sees it. It has the
// batch shape of wireguard-go's tun.Device so that a kernel TUN opened with
// IFF_VNET_HDR (tun.Device itself), an in-memory test link and, later, the
// netstack and overlay devices all plug in without adapters on the hot path.
//
// Contract:
//   - Read is called by one goroutine only. It fills bufs[i][offset:] with
//     packet i, sets sizes[i] and returns the number of packets. len(bufs) is
//     BatchSize() and every buffer has room for offset+MTU bytes at least.
//   - Write may be called concurrently by several goroutines (one per source
//     port). The packets are at bufs[i][offset:]; offset is at least
//     Headroom. Write must not keep the buffers after it returns.
//   - After Close, a blocked Read returns an error (os.ErrClosed or
//     net.ErrClosed) and later calls fail; Close may be called more than once.
//   - BatchSize never changes.
type Port interface {
	Read(bufs [][]byte, sizes []int, offset int) (n int, err error)
	Write(bufs [][]byte, offset int) (int, error)
	BatchSize() int
	Close() error
}

// Headroom is the offset at which the router places packets in its buffers.
// It leaves room for a virtio-net header (10 bytes) that a vnet_hdr TUN
// writes in front of the packet, and for the outer headers of the overlay
// (IPv4 20 + UDP 8 + VXLAN 8 + Ethernet 14 = 50) to be prepended in place.
const Headroom = 64
