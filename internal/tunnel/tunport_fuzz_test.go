package tunnel

import (
	"bytes"
	"testing"

	"github.com/vrouter/vrouter/internal/offload"
	"github.com/vrouter/vrouter/internal/offload/offloadtest"
	"github.com/vrouter/vrouter/router"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// sentinel is a plain IPv4 packet (experimental protocol 253) that ends a
// fuzz run's reads.
func sentinel() []byte {
	b := make([]byte, header.IPv4MinimumSize+8)
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: 253,
		SrcAddr: header.IPv4Any, DstAddr: header.IPv4Broadcast})
	ip.SetChecksum(^ip.CalculateChecksum())
	copy(b[header.IPv4MinimumSize:], "sentinel")
	return b
}

// FuzzVnetPortRead: the container's kernel writes a virtio-net header and
// a packet; a vnet_hdr port's Read (checksum completion, segmentation of
// super-packets) must take any of them without a panic, return only
// packets that fit the buffers, and come to the next packet after it.
func FuzzVnetPortRead(f *testing.F) {
	hdr, sp := offloadtest.Super(offloadtest.TCP{Src: "10.240.0.1", Dst: "10.240.0.2", Payload: 10 * 1000}, 1000)
	f.Add(hdr[:], sp)
	hdr, partial := offloadtest.Partial(offloadtest.TCP{Src: "10.240.0.1", Dst: "10.240.0.2", Payload: 300})
	f.Add(hdr[:], partial)
	f.Add(make([]byte, offload.HdrLen), sentinel())
	f.Add([]byte{1, 1, 0, 0, 0, 0, 0, 0, 0, 0}, []byte{0x45})
	end := sentinel()
	f.Fuzz(func(t *testing.T, vh, pkt []byte) {
		var h [offload.HdrLen]byte
		copy(h[:], vh)
		if len(pkt) > router.MaxGSOPacket {
			pkt = pkt[:router.MaxGSOPacket]
		}
		p, _, peer := seqpacketPort(t, true)
		send(t, peer, h[:], pkt)
		send(t, peer, make([]byte, offload.HdrLen), end)
		bufs, sizes := bufsOf(8, 1500)
		for reads := 0; ; reads++ {
			if reads > 1000 {
				t.Fatal("no end after 1000 reads")
			}
			n, err := p.Read(bufs, sizes, router.Headroom)
			if err != nil {
				continue // a malformed super-packet: the next Read goes on
			}
			for i := range n {
				if sizes[i] < 0 || sizes[i] > len(bufs[i])-router.Headroom {
					t.Fatalf("packet %d of %d bytes in a %d-byte buffer", i, sizes[i], len(bufs[i])-router.Headroom)
				}
				if bytes.Equal(bufs[i][router.Headroom:router.Headroom+sizes[i]], end) {
					return
				}
			}
		}
	})
}
