package memnet

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/vrouter/vrouter/internal/leaktest"
)

var lo = netip.MustParseAddr("127.0.0.1")

func listen(t *testing.T, n *Network, addr netip.AddrPort) *Transport {
	t.Helper()
	tr, err := n.Listen(addr)
	if err != nil {
		t.Fatalf("Listen(%v): %v", addr, err)
	}
	t.Cleanup(func() { _ = tr.Shutdown() })
	return tr.(*Transport)
}

func TestListenAddresses(t *testing.T) {
	var n Network
	a := listen(t, &n, netip.AddrPortFrom(lo, 0))
	b := listen(t, &n, netip.AddrPortFrom(lo, 0))
	if a.Addr().Port() == 0 || a.Addr() == b.Addr() {
		t.Fatalf("port 0 gave %v and %v", a.Addr(), b.Addr())
	}
	if _, err := n.Listen(a.Addr()); err == nil {
		t.Fatalf("second Listen(%v) accepted", a.Addr())
	}
	if _, err := n.Listen(netip.AddrPortFrom(netip.IPv4Unspecified(), 0)); err == nil {
		t.Fatal("Listen on 0.0.0.0 accepted")
	}
	ip, port, err := a.FinalAdvertiseAddr("", 0)
	if err != nil || !ip.Equal(net.IP(lo.AsSlice())) || port != int(a.Addr().Port()) {
		t.Fatalf("FinalAdvertiseAddr(\"\", 0) = %v, %d, %v; want %v", ip, port, err, a.Addr())
	}
	ip, port, err = a.FinalAdvertiseAddr("127.0.0.9", 7)
	if err != nil || !ip.Equal(net.IPv4(127, 0, 0, 9)) || port != 7 {
		t.Fatalf("FinalAdvertiseAddr(127.0.0.9, 7) = %v, %d, %v", ip, port, err)
	}
	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := a.Shutdown(); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	again := listen(t, &n, a.Addr())
	if again.Addr() != a.Addr() {
		t.Fatalf("address not free after Shutdown: got %v", again.Addr())
	}
}

func recvPacket(t *testing.T, tr *Transport) *memberlist.Packet {
	t.Helper()
	select {
	case p := <-tr.PacketCh():
		return p
	case <-time.After(5 * time.Second):
		t.Fatal("no packet")
		return nil
	}
}

func noPacket(t *testing.T, tr *Transport) {
	t.Helper()
	select {
	case p := <-tr.PacketCh():
		t.Fatalf("unexpected packet %q", p.Buf)
	default:
	}
}

func TestPackets(t *testing.T) {
	var n Network
	a := listen(t, &n, netip.AddrPortFrom(lo, 0))
	b := listen(t, &n, netip.AddrPortFrom(lo, 0))

	buf := []byte("ping")
	if _, err := a.WriteToAddress(buf, memberlist.Address{Addr: b.Addr().String(), Name: "ignored"}); err != nil {
		t.Fatal(err)
	}
	copy(buf, "XXXX") // the sender may reuse its buffer
	p := recvPacket(t, b)
	if string(p.Buf) != "ping" || p.From.String() != a.Addr().String() || p.From.Network() != "udp" {
		t.Fatalf("got %q from %v (%s)", p.Buf, p.From, p.From.Network())
	}

	// Nobody at the address: sent into the void, like UDP.
	if _, err := a.WriteTo([]byte("lost"), "127.0.0.1:65535"); err != nil {
		t.Fatalf("WriteTo an unheld address: %v", err)
	}
	if _, err := a.WriteTo([]byte("x"), "not an address"); err == nil {
		t.Fatal("WriteTo a malformed address succeeded")
	}

	// A full queue drops and counts.
	for range packetQueue + 3 {
		if _, err := a.WriteTo([]byte("flood"), b.Addr().String()); err != nil {
			t.Fatal(err)
		}
	}
	if b.Dropped() != 3 {
		t.Fatalf("Dropped = %d, want 3", b.Dropped())
	}
	for range packetQueue {
		recvPacket(t, b)
	}
	noPacket(t, b)

	// A shut-down receiver gets nothing; a shut-down sender cannot send.
	if err := b.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.WriteTo([]byte("late"), b.Addr().String()); err != nil {
		t.Fatalf("WriteTo a shut-down peer: %v", err)
	}
	noPacket(t, b)
	if _, err := b.WriteTo([]byte("x"), a.Addr().String()); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteTo after Shutdown: %v, want net.ErrClosed", err)
	}
}

// accept takes one stream from tr, or fails.
func accept(t *testing.T, tr *Transport) net.Conn {
	t.Helper()
	select {
	case c := <-tr.StreamCh():
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no stream")
		return nil
	}
}

func TestStreams(t *testing.T) {
	leaktest.Check(t)
	var n Network
	a := listen(t, &n, netip.AddrPortFrom(lo, 0))
	b := listen(t, &n, netip.AddrPortFrom(lo, 0))

	if _, err := a.DialTimeout("127.0.0.1:65535", time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial an unheld address: %v, want connection refused", err)
	}

	type dialed struct {
		c   net.Conn
		err error
	}
	ch := make(chan dialed, 1)
	go func() {
		c, err := a.DialAddressTimeout(memberlist.Address{Addr: b.Addr().String()}, 5*time.Second)
		ch <- dialed{c, err}
	}()
	srv := accept(t, b)
	d := <-ch
	if d.err != nil {
		t.Fatal(d.err)
	}
	cli := d.c
	defer cli.Close()
	if cli.RemoteAddr().String() != b.Addr().String() || srv.RemoteAddr().String() != a.Addr().String() ||
		cli.LocalAddr().String() != a.Addr().String() || srv.RemoteAddr().Network() != "tcp" {
		t.Fatalf("addresses: client %v→%v, server %v→%v", cli.LocalAddr(), cli.RemoteAddr(), srv.LocalAddr(), srv.RemoteAddr())
	}
	go func() {
		_, _ = cli.Write([]byte("hello"))
	}()
	got := make([]byte, 5)
	if _, err := io.ReadFull(srv, got); err != nil || string(got) != "hello" {
		t.Fatalf("read %q, %v", got, err)
	}

	// Nobody accepts: the dial times out.
	if _, err := a.DialTimeout(b.Addr().String(), 20*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("dial nobody accepts: %v, want a timeout", err)
	}

	// The server's Shutdown closes its end, as a crash closes sockets.
	if err := b.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Read(got); !errors.Is(err, io.EOF) {
		t.Fatalf("read after the peer's Shutdown: %v, want EOF", err)
	}
	if _, err := a.DialTimeout(b.Addr().String(), time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial a shut-down peer: %v, want connection refused", err)
	}
	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.DialTimeout(b.Addr().String(), time.Second); err == nil {
		t.Fatal("dial from a shut-down transport succeeded")
	}
}
