package tunnel

import (
	"bytes"
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/leaktest"
	"github.com/vrouter/vrouter/internal/offload"
	"github.com/vrouter/vrouter/internal/offload/offloadtest"
	"github.com/vrouter/vrouter/router"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// seqpacketPort returns a port on one end of a SOCK_SEQPACKET pair and the
// other end: like a TUN it keeps packet boundaries and is pollable, and it
// needs no privileges. vnet selects the vnet_hdr port type.
func seqpacketPort(t *testing.T, vnet bool) (router.Port, *tunPort, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[1]) })
	if err := unix.SetNonblock(fds[0], true); err != nil {
		t.Fatal(err)
	}
	// Room for 64 KiB packets in both directions.
	for _, fd := range fds {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20)
	}
	f := os.NewFile(uintptr(fds[0]), "seqpacket")
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var p router.Port
	var base *tunPort
	if vnet {
		v := &vnetPort{}
		v.init(f, rc, "sp0", 1390)
		p, base = v, &v.tunPort
	} else {
		base = &tunPort{}
		base.init(f, rc, "sp0", 1390)
		p = base
	}
	t.Cleanup(func() { p.Close() })
	return p, base, fds[1]
}

func bufsOf(n, size int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, router.Headroom+size)
	}
	return bufs, make([]int, n)
}

func send(t *testing.T, fd int, parts ...[]byte) {
	t.Helper()
	if _, err := unix.Write(fd, bytes.Join(parts, nil)); err != nil {
		t.Fatal(err)
	}
}

func TestVnetPortReadGSO(t *testing.T) {
	leaktest.Check(t)
	p, _, peer := seqpacketPort(t, true)
	off := p.(router.OffloadPort)
	hdr, sp := offloadtest.Super(offloadtest.TCP{Src: "10.240.0.1", Dst: "10.240.0.2", Payload: 60000}, 1338)
	send(t, peer, hdr[:], sp)
	plain := offloadtest.Packet(offloadtest.TCP{Src: "10.240.0.1", Dst: "10.240.0.2", Payload: 10})
	send(t, peer, make([]byte, 10), plain)

	bufs, sizes := bufsOf(vnetBatch, router.MaxGSOPacket)
	if err := p.(router.ReadWaiter).WaitRead(); err != nil {
		t.Fatal(err)
	}
	n, err := off.ReadGSO(bufs, sizes, router.Headroom)
	if err != nil || n != 2 {
		t.Fatalf("ReadGSO = %d, %v; want both packets", n, err)
	}
	if got := bufs[0][router.Headroom-10 : router.Headroom+sizes[0]]; !bytes.Equal(got[:10], hdr[:]) || !bytes.Equal(got[10:], sp) {
		t.Error("super-packet or its header not where the router expects them")
	}
	if !bytes.Equal(bufs[1][router.Headroom:router.Headroom+sizes[1]], plain) {
		t.Error("plain packet mangled")
	}
}

func TestVnetPortWrites(t *testing.T) {
	p, _, peer := seqpacketPort(t, true)
	off := p.(router.OffloadPort)
	pkt := offloadtest.Packet(offloadtest.TCP{Src: "10.240.0.2", Dst: "10.240.0.1", Payload: 100})
	buf := make([]byte, router.Headroom+len(pkt))
	copy(buf[router.Headroom:], pkt)
	for i := range router.Headroom {
		buf[i] = 0xee // whatever the headroom held before
	}
	if n, err := p.Write([][]byte{buf}, router.Headroom); n != 1 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	got := make([]byte, 70000)
	m, err := unix.Read(peer, got)
	if err != nil || !bytes.Equal(got[:m], append(make([]byte, 10), pkt...)) {
		t.Fatalf("Write did not put a zero virtio-net header in front (read %d, %v)", m, err)
	}

	hdr, sp := offloadtest.Super(offloadtest.TCP{Src: "10.240.0.2", Dst: "10.240.0.1", Payload: 30000}, 1338)
	buf = make([]byte, router.Headroom+len(sp))
	copy(buf[router.Headroom-10:], hdr[:])
	copy(buf[router.Headroom:], sp)
	if n, err := off.WriteGSO([][]byte{buf}, router.Headroom); n != 1 || err != nil {
		t.Fatalf("WriteGSO = %d, %v", n, err)
	}
	m, err = unix.Read(peer, got)
	if err != nil || !bytes.Equal(got[:m], append(hdr[:], sp...)) {
		t.Fatalf("WriteGSO changed the packet or header (read %d, %v)", m, err)
	}
	if _, err := off.WriteGSO([][]byte{buf}, 4); err == nil {
		t.Error("WriteGSO with no room for the header succeeded")
	}
}

// TestVnetPortPlainRead: Read hands out finished packets only, segmenting
// a super-packet over as many calls as the caller's buffers need.
func TestVnetPortPlainRead(t *testing.T) {
	p, _, peer := seqpacketPort(t, true)
	hdr, sp := offloadtest.Super(offloadtest.TCP{Src: "10.240.0.1", Dst: "10.240.0.2", Payload: 10 * 1000}, 1000)
	send(t, peer, hdr[:], sp)
	phdr, partial := offloadtest.Partial(offloadtest.TCP{Src: "10.240.0.1", Dst: "10.240.0.2", Seq: 10000, Payload: 300})
	send(t, peer, phdr[:], partial)

	bufs, sizes := bufsOf(4, 1500)
	var counts []int
	var seq uint32
	for len(counts) < 4 {
		n, err := p.Read(bufs, sizes, router.Headroom)
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		counts = append(counts, n)
		for i := range n {
			pkt := bufs[i][router.Headroom : router.Headroom+sizes[i]]
			if !offloadtest.Valid(pkt) {
				t.Fatalf("read %d packet %d: invalid", len(counts), i)
			}
			tcp := header.TCP(header.IPv4(pkt).Payload())
			if tcp.SequenceNumber() != seq {
				t.Fatalf("seq %d, want %d", tcp.SequenceNumber(), seq)
			}
			seq += uint32(len(tcp.Payload()))
		}
	}
	if want := []int{4, 4, 2, 1}; !slices.Equal(counts, want) || seq != 10300 {
		t.Errorf("reads returned %v packets (want %v), %d bytes", counts, want, seq)
	}
}

func TestPlainPortReadsBatches(t *testing.T) {
	p, _, peer := seqpacketPort(t, false)
	if _, ok := p.(router.OffloadPort); ok {
		t.Fatal("a TUN without vnet_hdr must not be an OffloadPort")
	}
	for i := range 3 {
		send(t, peer, []byte{0x45, byte(i)})
	}
	bufs, sizes := bufsOf(p.BatchSize(), 1500)
	n, err := p.Read(bufs, sizes, router.Headroom)
	if err != nil || n != 3 || sizes[2] != 2 || bufs[2][router.Headroom+1] != 2 {
		t.Fatalf("Read = %d, %v, sizes %v", n, err, sizes[:3])
	}
}

// TestPortCloseWakesWaiters: Close ends a WaitRead and a Read blocked in
// the poller with os.ErrClosed, and leaves no goroutine behind.
func TestPortCloseWakesWaiters(t *testing.T) {
	for _, blocked := range []string{"WaitRead", "ReadGSO"} {
		t.Run(blocked, func(t *testing.T) {
			leaktest.Check(t)
			p, base, _ := seqpacketPort(t, true)
			errc := make(chan error, 1)
			go func() {
				if blocked == "WaitRead" {
					errc <- p.(router.ReadWaiter).WaitRead()
					return
				}
				bufs, sizes := bufsOf(2, router.MaxGSOPacket)
				_, err := p.(router.OffloadPort).ReadGSO(bufs, sizes, router.Headroom)
				errc <- err
			}()
			select {
			case err := <-errc:
				t.Fatalf("%s returned before Close: %v (drained %v)", blocked, err, base.drained)
			case <-time.After(50 * time.Millisecond):
			}
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-errc:
				if !errors.Is(err, os.ErrClosed) {
					t.Errorf("%s after Close: %v, want os.ErrClosed", blocked, err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s still blocked after Close", blocked)
			}
			if err := p.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
			if _, err := p.Write([][]byte{make([]byte, router.Headroom+20)}, router.Headroom); !errors.Is(err, os.ErrClosed) {
				t.Errorf("Write after Close: %v", err)
			}
		})
	}
}

// TestWaitReadSeesQueuedPacket: a packet queued after the last read emptied
// the queue and before WaitRead began must wake it (the poller alone would
// not: it forgets readiness when a wait begins).
func TestWaitReadSeesQueuedPacket(t *testing.T) {
	p, base, peer := seqpacketPort(t, true)
	bufs, sizes := bufsOf(2, router.MaxGSOPacket)
	send(t, peer, make([]byte, 10), []byte{0x45})
	if n, err := p.(router.OffloadPort).ReadGSO(bufs, sizes, router.Headroom); n != 1 || err != nil || !base.drained {
		t.Fatalf("ReadGSO = %d, %v, drained %v", n, err, base.drained)
	}
	send(t, peer, make([]byte, 10), []byte{0x45})
	done := make(chan error, 1)
	go func() { done <- p.(router.ReadWaiter).WaitRead() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitRead missed a queued packet")
	}
}

func TestPortIOAllocs(t *testing.T) {
	p, _, peer := seqpacketPort(t, true)
	off := p.(router.OffloadPort)
	bufs, sizes := bufsOf(vnetBatch, 2000)
	out := [][]byte{make([]byte, router.Headroom+100)}
	msg := append(make([]byte, 10), offloadtest.Packet(offloadtest.TCP{Src: "10.240.0.1", Dst: "10.240.0.2", Payload: 60})...)
	sink := make([]byte, 2000)
	allocs := testing.AllocsPerRun(100, func() {
		unix.Write(peer, msg)
		if err := p.(router.ReadWaiter).WaitRead(); err != nil {
			t.Fatal(err)
		}
		if n, err := off.ReadGSO(bufs, sizes, router.Headroom); n != 1 || err != nil {
			t.Fatalf("ReadGSO = %d, %v", n, err)
		}
		if _, err := off.WriteGSO(out, router.Headroom); err != nil {
			t.Fatal(err)
		}
		unix.Read(peer, sink)
	})
	if allocs != 0 {
		t.Errorf("a read and a write allocate %v times", allocs)
	}
}

// TestVnetPortWriteCoalesces: segments of one flow given to Write in
// buffers with spare room reach the TUN as one super-packet.
func TestVnetPortWriteCoalesces(t *testing.T) {
	p, _, peer := seqpacketPort(t, true)
	in := offloadtest.TCP{Src: "10.240.0.2", Dst: "10.240.0.1", Payload: 10 * 1000}
	hdr, sp := offloadtest.Super(in, 1000)
	segs, sizes := bufsOf(16, 1500)
	n, _ := offload.SplitTCP(header.IPv4(sp), 1000, 0, segs, sizes, router.Headroom)
	bufs := make([][]byte, n)
	for k := range n {
		bufs[k] = make([]byte, router.Headroom+sizes[k], 65535) // like wireguard-go's
		copy(bufs[k], segs[k][:router.Headroom+sizes[k]])
	}
	if got, err := p.Write(bufs, router.Headroom); got != n || err != nil {
		t.Fatalf("Write = %d, %v", got, err)
	}
	msg := make([]byte, 70000)
	m, err := unix.Read(peer, msg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(msg[:10], hdr[:]) || !bytes.Equal(msg[10:m], sp) {
		t.Errorf("TUN got %d bytes, not the super-packet the segments came from", m)
	}
	if _, _, err := unix.Recvfrom(peer, msg, unix.MSG_DONTWAIT); !errors.Is(err, unix.EAGAIN) {
		t.Errorf("more than one packet written: %v", err)
	}
}

// TestVnetPortWriteGSOMergesUDP: datagrams of one flow handed to WriteGSO
// (a container's, checksum left to the device) reach the TUN as one UDP
// super-packet; a TCP super-packet among them keeps its header.
func TestVnetPortWriteGSOMergesUDP(t *testing.T) {
	p, _, peer := seqpacketPort(t, true)
	off := p.(router.OffloadPort)
	flow := offloadtest.UDP{Src: "10.240.0.2", Dst: "10.240.0.1", Payload: 64}
	var bufs [][]byte
	var payload []byte
	for k := range 8 {
		u := flow
		u.Fill, u.ID = byte(k), uint16(k)
		hdr, pkt := offloadtest.UDPPartial(u)
		b := make([]byte, router.Headroom+len(pkt), router.Headroom+router.MaxGSOPacket)
		copy(b[router.Headroom-10:], hdr[:])
		copy(b[router.Headroom:], pkt)
		bufs = append(bufs, b)
		payload = append(payload, pkt[28:]...)
	}
	thdr, sp := offloadtest.Super(offloadtest.TCP{Src: "10.240.0.2", Dst: "10.240.0.1", Payload: 3000}, 1338)
	tb := make([]byte, router.Headroom+len(sp))
	copy(tb[router.Headroom-10:], thdr[:])
	copy(tb[router.Headroom:], sp)
	bufs = append(bufs, tb)
	if n, err := off.WriteGSO(bufs, router.Headroom); n != len(bufs) || err != nil {
		t.Fatalf("WriteGSO = %d, %v", n, err)
	}
	msg := make([]byte, 70000)
	m, err := unix.Read(peer, msg)
	if err != nil {
		t.Fatal(err)
	}
	h := offload.Decode(msg)
	if h.GSOType != offload.GSOUDPL4 || h.GSOSize != 64 || !bytes.Equal(msg[10+28:m], payload) {
		t.Fatalf("first write: header %+v, %d bytes; want one UDP super-packet of the 8 datagrams", h, m)
	}
	m, err = unix.Read(peer, msg)
	if err != nil || !bytes.Equal(msg[:m], append(thdr[:], sp...)) {
		t.Fatalf("second write is not the TCP super-packet as given (%d bytes, %v)", m, err)
	}
	if _, _, err := unix.Recvfrom(peer, msg, unix.MSG_DONTWAIT); !errors.Is(err, unix.EAGAIN) {
		t.Errorf("more than two writes: %v", err)
	}
}

// TestReadAfterWaitTakesOnePacket: after a WaitRead that had to wait, the
// read takes one packet and does not look for a second (no empty read per
// request/response packet); WaitRead's look then finds the rest queued and
// returns at once, without waiting, and that read takes the queue to its
// end.
func TestReadAfterWaitTakesOnePacket(t *testing.T) {
	p, base, peer := seqpacketPort(t, true)
	off := p.(router.OffloadPort)
	for i := range 3 {
		send(t, peer, make([]byte, 10), []byte{0x45, byte(i + 1)})
	}
	base.drained, base.single = false, true // as after WaitRead's wake-up
	bufs, sizes := bufsOf(vnetBatch, 100)
	n, err := off.ReadGSO(bufs, sizes, router.Headroom)
	if n != 1 || err != nil || !base.drained || base.single || bufs[0][router.Headroom+1] != 1 {
		t.Fatalf("read after a wait = %d, %v, drained %v, single %v; want 1 packet, drained", n, err, base.drained, base.single)
	}
	if err := p.(router.ReadWaiter).WaitRead(); err != nil {
		t.Fatal(err)
	}
	if base.single || base.waited {
		t.Fatal("WaitRead waited with packets queued")
	}
	n, err = off.ReadGSO(bufs, sizes, router.Headroom)
	if n != 2 || err != nil || !base.drained || bufs[1][router.Headroom+1] != 3 {
		t.Fatalf("read of a burst = %d, %v, drained %v; want 2 packets, drained", n, err, base.drained)
	}
}

// TestWakeWithoutPacket: a poller wake-up that brings no packet (a stale
// edge) makes the read return none at once, so that the port goes back to
// WaitRead and waits without holding the batch's buffers.
func TestWakeWithoutPacket(t *testing.T) {
	p, base, peer := seqpacketPort(t, true)
	base.drained, base.single = false, true // as after WaitRead's wake-up
	bufs, sizes := bufsOf(vnetBatch, 100)
	n, err := p.(router.OffloadPort).ReadGSO(bufs, sizes, router.Headroom)
	if n != 0 || err != nil || !base.drained || base.single {
		t.Fatalf("ReadGSO = %d, %v, drained %v single %v; want 0, nil, true, false", n, err, base.drained, base.single)
	}
	// The plain Read of a vnet port hides such a wake-up: it returns a
	// packet, blocking until one comes.
	base.single = true
	sent := make(chan error, 1)
	go func() {
		_, err := unix.Write(peer, append(make([]byte, 10), 0x45, 7))
		sent <- err
	}()
	n, err = p.Read(bufs, sizes, router.Headroom)
	if n != 1 || err != nil || bufs[0][router.Headroom+1] != 7 {
		t.Fatalf("Read = %d, %v", n, err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
}
