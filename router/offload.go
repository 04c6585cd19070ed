package router

import "github.com/vrouter/vrouter/internal/offload"

// OffloadPort is a Port that moves packets larger than its MTU: a TUN with
// IFF_VNET_HDR and TSO. Its kernel hands over TCP super-packets of up to
// 64 KiB (one per read instead of one per segment) and packets whose
// checksum is still to be computed, each described by a virtio-net header.
//
// The router keeps such a packet whole when its destination is an
// OffloadPort too (same-node traffic: one write of 64 KiB where plain
// ports take forty-odd), and segments it itself for every other
// destination (the overlay, the network's Local, a plain port).
//
// Contract, in addition to Port's:
//   - ReadGSO is Read, except that every packet has its 10-byte virtio-net
//     header at bufs[i][offset-VirtioHdrLen:offset], and that bufs[i] must
//     have room for offset+MaxGSOPacket bytes.
//   - WriteGSO writes packets whose header is at
//     bufs[i][offset-VirtioHdrLen:offset]; a zero header is a plain packet.
//   - Read and Write keep working for packets without a header (Write
//     writes a zero one into the headroom, as NativeTun does).
type OffloadPort interface {
	Port
	ReadGSO(bufs [][]byte, sizes []int, offset int) (n int, err error)
	WriteGSO(bufs [][]byte, offset int) (int, error)
}

// ReadWaiter is a Port that can wait for packets without holding buffers.
// WaitRead returns when a Read would probably not block (it may return
// early, never late) or with the error Read would return. The router
// calls it before taking read buffers from its pool, so that an idle port
// costs no buffer memory.
type ReadWaiter interface {
	WaitRead() error
}

// VirtioHdrLen is the size of struct virtio_net_hdr (without num_buffers).
const VirtioHdrLen = offload.HdrLen

// MaxGSOPacket is the largest packet an OffloadPort reads: an IPv4 packet
// of the largest total length.
const MaxGSOPacket = 65535
