package stack

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/vrouter/vrouter/internal/leaktest"
	"github.com/vrouter/vrouter/internal/offload"
	"github.com/vrouter/vrouter/internal/offload/offloadtest"
	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/stack/stacktest"
)

// bigTXTHandler answers every query with about 50 KiB of TXT records: one
// DNS-over-TCP write larger than many MSS.
type bigTXTHandler struct{}

func (bigTXTHandler) ServeDNS(w mdns.ResponseWriter, r *mdns.Msg) {
	m := new(mdns.Msg).SetReply(r)
	for i := range 200 {
		s := strings.Repeat(string(rune('a'+i%26)), 240)
		m.Answer = append(m.Answer, &mdns.TXT{Hdr: mdns.RR_Header{Name: r.Question[0].Name, Rrtype: mdns.TypeTXT, Class: mdns.ClassINET, Ttl: 30}, Txt: []string{s}})
	}
	w.WriteMsg(m)
}

// gsoDevice plays the container's vnet_hdr TUN for OutputGSO: it checks
// and keeps the super-packets, completes checksums and segments as the
// kernel would, and hands the result to the container.
type gsoDevice struct {
	t    *testing.T
	port router.Port
	mss  int

	mu     sync.Mutex
	supers int // super-packets seen
}

func (d *gsoDevice) fail(format string, args ...any) { d.t.Errorf(format, args...) }

func (d *gsoDevice) output(bufs [][]byte, offset int) {
	var out [][]byte
	for _, b := range bufs {
		h := offload.Decode(b[offset-offload.HdrLen : offset])
		pkt := bytes.Clone(b[offset:])
		switch {
		case h.GSO() == offload.GSOTCPv4:
			d.checkSuper(h, pkt)
			segs := make([][]byte, 64)
			for i := range segs {
				segs[i] = make([]byte, router.Headroom+offload.SegmentLen(pkt, h))
			}
			sizes := make([]int, len(segs))
			for first := 0; ; {
				n, total := offload.SplitTCP(pkt, int(h.GSOSize), first, segs, sizes, router.Headroom)
				if n < 0 {
					d.fail("super-packet does not split")
					return
				}
				for k := range n {
					out = append(out, bytes.Clone(segs[k][:router.Headroom+sizes[k]]))
				}
				if first += n; first == total {
					break
				}
			}
			continue
		case h.Flags&offload.NeedsCsum != 0:
			if h.CsumStart != header.IPv4MinimumSize || h.CsumOffset != header.TCPChecksumOffset || !offload.CompleteChecksum(pkt, h) || !offloadtest.Valid(pkt) {
				d.fail("partial-checksum packet with header %+v is not valid once completed", h)
			}
		case h != (offload.Hdr{}):
			d.fail("plain packet with a non-zero header %+v", h)
		}
		out = append(out, append(make([]byte, router.Headroom), pkt...))
	}
	d.port.Write(out, router.Headroom)
}

// checkSuper checks a super-packet's header against the packet, and that
// completing its checksum makes it a valid TCP/IPv4 packet.
func (d *gsoDevice) checkSuper(h offload.Hdr, pkt []byte) {
	d.mu.Lock()
	d.supers++
	d.mu.Unlock()
	ip := header.IPv4(pkt)
	thl := int(header.TCP(pkt[ip.HeaderLength():]).DataOffset())
	switch {
	case h.Flags != offload.NeedsCsum:
		d.fail("super-packet flags %#x, want NEEDS_CSUM", h.Flags)
	case int(h.HdrLen) != int(ip.HeaderLength())+thl:
		d.fail("hdr_len %d, want %d", h.HdrLen, int(ip.HeaderLength())+thl)
	case h.GSOSize == 0 || int(h.GSOSize) > d.mss || len(pkt)-int(h.HdrLen) <= int(h.GSOSize):
		d.fail("gso_size %d for %d payload bytes (MSS at most %d)", h.GSOSize, len(pkt)-int(h.HdrLen), d.mss)
	case h.CsumStart != uint16(ip.HeaderLength()) || h.CsumOffset != header.TCPChecksumOffset:
		d.fail("csum_start %d csum_offset %d", h.CsumStart, h.CsumOffset)
	case len(pkt) > 65535 || int(ip.TotalLength()) != len(pkt):
		d.fail("super-packet of %d bytes, total length %d", len(pkt), ip.TotalLength())
	}
	c := bytes.Clone(pkt)
	if !offload.CompleteChecksum(c, h) || !offloadtest.Valid(c) {
		d.fail("super-packet not valid once its checksum is completed")
	}
}

// TestGSOSuperPackets: with GSO, a 50 KiB write of the stack's TCP (a DNS
// answer) reaches OutputGSO as super-packets whose virtio-net headers a
// TUN takes as they are, and the container reads the answer intact.
func TestGSOSuperPackets(t *testing.T) {
	leaktest.Check(t)
	c, err := stacktest.New(stacktest.Config{Addr: netip.MustParseAddr("10.240.0.7")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	const mtu = 1390
	dev := &gsoDevice{t: t, port: c.Port(), mss: mtu - 40}
	s, err := New(Config{
		Name: "gso", Addr: resolver, MTU: mtu, Headroom: router.Headroom, DNS: bigTXTHandler{},
		Output:    func(bufs [][]byte, offset int) { c.Port().Write(bufs, offset) },
		GSO:       true,
		OutputGSO: dev.output,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	wire(t, c, s)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := c.DialTCP(ctx, netip.AddrPortFrom(resolver, DNSPort))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	dc := &mdns.Conn{Conn: conn}
	// Several queries: the congestion window grows, and so do the
	// super-packets.
	for range 4 {
		q := new(mdns.Msg).SetQuestion("big.example.", mdns.TypeTXT)
		if err := dc.WriteMsg(q); err != nil {
			t.Fatal(err)
		}
		r, err := dc.ReadMsg()
		if err != nil {
			t.Fatal(err)
		}
		if r.Id != q.Id || len(r.Answer) != 200 {
			t.Fatalf("reply with %d answers, want 200", len(r.Answer))
		}
	}
	dev.mu.Lock()
	defer dev.mu.Unlock()
	if dev.supers == 0 {
		t.Error("no super-packet reached OutputGSO")
	}
	t.Logf("%d super-packets", dev.supers)
}

// TestPutVirtioHdr: the header of each kind of packet gVisor sends.
func TestPutVirtioHdr(t *testing.T) {
	small := offloadtest.Packet(offloadtest.TCP{Src: "169.254.20.10", Dst: "10.240.0.7", Payload: 100})
	large := offloadtest.Packet(offloadtest.TCP{Src: "169.254.20.10", Dst: "10.240.0.7", Payload: 5000})
	udp := stacktest.UDPPacket(netip.MustParseAddrPort("169.254.20.10:53"), netip.MustParseAddrPort("10.240.0.7:4000"), []byte("x"))
	host := stack.GSO{Type: stack.GSOTCPv4, NeedsCsum: true, CsumOffset: header.TCPChecksumOffset, MSS: 1350, L3HdrLen: header.IPv4MinimumSize}
	hdr := func(flags, typ uint8, hdrLen, size, start, off uint16) [offload.HdrLen]byte {
		var h [offload.HdrLen]byte
		h[0], h[1] = flags, typ
		for i, v := range []uint16{hdrLen, size, start, off} {
			binary.LittleEndian.PutUint16(h[2+2*i:], v)
		}
		return h
	}
	for _, tc := range []struct {
		name string
		o    stack.GSO
		pkt  []byte
		want [offload.HdrLen]byte
	}{
		{"plain", stack.GSO{}, small, [offload.HdrLen]byte{}},
		{"udp", stack.GSO{}, udp, [offload.HdrLen]byte{}},
		{"checksum only", host, small, hdr(offload.NeedsCsum, offload.GSONone, 0, 0, 20, 16)},
		{"super-packet", host, large, hdr(offload.NeedsCsum, offload.GSOTCPv4, 40, 1350, 20, 16)},
		{"truncated", host, small[:30], [offload.HdrLen]byte{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := [offload.HdrLen]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff} // stale bytes of a reused buffer
			putVirtioHdr(got[:], tc.o, tc.pkt)
			if got != tc.want {
				t.Errorf("header %x, want %x", got, tc.want)
			}
		})
	}
}

func TestNewGSOErrors(t *testing.T) {
	out := func([][]byte, int) {}
	for name, cfg := range map[string]Config{
		"no OutputGSO":   {Addr: resolver, MTU: 1390, Output: out, Headroom: router.Headroom, GSO: true},
		"small headroom": {Addr: resolver, MTU: 1390, Output: out, Headroom: 4, GSO: true, OutputGSO: out},
	} {
		if s, err := New(cfg); err == nil {
			s.Close()
			t.Errorf("%s: New succeeded", name)
		}
	}
}

// TestGSOLinkDropsOversize: a packet above the MTU without GSO options is
// dropped and counted, never written.
func TestGSOLinkDropsOversize(t *testing.T) {
	rec := &outRecorder{}
	l := newGSOLink(100, 16, rec.output, rec.output)
	l.Attach(nopDispatcher{})
	t.Cleanup(func() { l.Attach(nil); l.Wait() })
	writeSeq(t, l, 1, 0, 1) // 5 bytes: fits
	var list stack.PacketBufferList
	list.PushBack(stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(make([]byte, 200))}))
	l.WritePackets(list)
	list.DecRef()
	deadline := time.Now().Add(5 * time.Second)
	for rec.count() < 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if rec.count() != 1 || l.outDropped.Load() != 1 {
		t.Errorf("%d written, %d dropped; want 1 and 1", rec.count(), l.outDropped.Load())
	}
}

// largePackets makes n GSO packets of size bytes, above a small MTU.
func largePackets(n, size int) stack.PacketBufferList {
	var list stack.PacketBufferList
	for range n {
		pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(make([]byte, size))})
		pb.GSOOptions = stack.GSO{Type: stack.GSOTCPv4, NeedsCsum: true, MSS: 100}
		list.PushBack(pb)
	}
	return list
}

// TestGSOLinkLargeQueueBound: with outQueueLarge GSO packets waiting, a
// sender waits for room (the queue's memory stays bounded), and every
// packet arrives once the writer runs again.
func TestGSOLinkLargeQueueBound(t *testing.T) {
	leaktest.Check(t)
	gate := make(chan struct{})
	rec := &outRecorder{gate: gate}
	l := newGSOLink(100, 16, rec.output, rec.output)
	l.Attach(nopDispatcher{})
	t.Cleanup(func() { l.Attach(nil); l.Wait() })

	first := largePackets(1, 1000)
	l.WritePackets(first) // the writer takes it and blocks in output
	first.DecRef()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		l.qmu.Lock()
		taken := len(l.queue) == 0
		l.qmu.Unlock()
		if taken {
			break
		}
		time.Sleep(time.Millisecond)
	}
	full := largePackets(outQueueLarge, 1000)
	l.WritePackets(full) // fits: the queue was empty
	full.DecRef()
	done := make(chan struct{})
	go func() {
		defer close(done)
		more := largePackets(1, 1000)
		l.WritePackets(more)
		more.DecRef()
	}()
	select {
	case <-done:
		t.Fatal("WritePackets returned with outQueueLarge large packets waiting")
	case <-time.After(50 * time.Millisecond):
	}
	rec.mu.Lock()
	rec.gate = nil
	rec.mu.Unlock()
	close(gate)
	<-done
	want := outQueueLarge + 2
	for rec.count() < want && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := rec.count(); n != want || l.outDropped.Load() != 0 {
		t.Errorf("%d packets written, %d dropped; want %d and 0", n, l.outDropped.Load(), want)
	}
}
