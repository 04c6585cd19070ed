package stacktest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/leaktest"
	"github.com/vrouter/vrouter/router"
)

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"zero address", Config{}},
		{"ipv6 address", Config{Addr: netip.MustParseAddr("fd00::1")}},
		{"mtu too small", Config{Addr: netip.MustParseAddr("10.240.0.1"), MTU: 67}},
		{"mtu too big", Config{Addr: netip.MustParseAddr("10.240.0.1"), MTU: 65536}},
		{"negative batch", Config{Addr: netip.MustParseAddr("10.240.0.1"), BatchSize: -1}},
		{"negative queue", Config{Addr: netip.MustParseAddr("10.240.0.1"), QueueLen: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.cfg)
			if err == nil {
				c.Close()
				t.Fatalf("New(%+v) succeeded, want error", tt.cfg)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	c := newContainer(t, "10.240.0.1")
	if got := c.MTU(); got != router.DefaultMTU {
		t.Errorf("MTU() = %d, want %d", got, router.DefaultMTU)
	}
	p := c.Port()
	defer p.Close()
	if got := p.BatchSize(); got != DefaultBatchSize {
		t.Errorf("BatchSize() = %d, want %d", got, DefaultBatchSize)
	}
	if got, want := c.Addr(), netip.MustParseAddr("10.240.0.1"); got != want {
		t.Errorf("Addr() = %v, want %v", got, want)
	}
}

func TestTCPTransfer(t *testing.T) {
	leaktest.Check(t)
	a, b := newContainer(t, "10.240.0.1"), newContainer(t, "10.240.0.2")
	connect(t, a, b)

	ln, err := a.ListenTCP(8080)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer conn.Close()
		h := sha256.New()
		n, err := io.Copy(h, conn)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		if err == nil {
			_, r.err = conn.Write([]byte("ok"))
		}
		done <- r
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := b.DialTCP(ctx, netip.MustParseAddrPort("10.240.0.1:8080"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	data := make([]byte, 2<<20)
	rand.Read(data)
	if _, err := conn.Write(data); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := conn.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	reply, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("read reply: %v", err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("server: %v", r.err)
	}
	if r.n != int64(len(data)) || r.sum != sha256.Sum256(data) {
		t.Errorf("server got %d bytes, sha256 %x; sent %d bytes, sha256 %x", r.n, r.sum, len(data), sha256.Sum256(data))
	}
	if string(reply) != "ok" {
		t.Errorf("reply = %q, want %q", reply, "ok")
	}
	if got := conn.RemoteAddr().String(); got != "10.240.0.1:8080" {
		t.Errorf("RemoteAddr = %s", got)
	}
}

func TestUDPEcho(t *testing.T) {
	leaktest.Check(t)
	a, b := newContainer(t, "10.240.0.1"), newContainer(t, "10.240.0.2")
	connect(t, a, b)

	srv, err := a.ListenUDP(5353)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	served := make(chan error, 1)
	go func() {
		buf := make([]byte, 2048)
		n, from, err := srv.ReadFrom(buf)
		if err == nil {
			_, err = srv.WriteTo(append([]byte("echo:"), buf[:n]...), from)
		}
		served <- err
	}()

	conn, err := b.DialUDP(netip.MustParseAddrPort("10.240.0.1:5353"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if got := string(buf[:n]); got != "echo:hello" {
		t.Errorf("echo = %q, want %q", got, "echo:hello")
	}
	if err := <-served; err != nil {
		t.Errorf("server: %v", err)
	}
	if got := conn.LocalAddr().(*net.UDPAddr).IP.String(); got != "10.240.0.2" {
		t.Errorf("client local address %s, want 10.240.0.2", got)
	}
}

func TestPing(t *testing.T) {
	leaktest.Check(t)
	a, b := newContainer(t, "10.240.0.1"), newContainer(t, "10.240.0.2")
	connect(t, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Ping(ctx, a.Addr()); err != nil {
		t.Fatalf("ping: %v", err)
	}
	if err := a.Ping(ctx, b.Addr()); err != nil {
		t.Fatalf("ping back: %v", err)
	}
}

func TestUnknownDestinationFailsFast(t *testing.T) {
	leaktest.Check(t)
	a := newContainer(t, "10.240.0.1")
	connect(t, a)
	unknown := netip.MustParseAddr("10.240.1.99")

	t.Run("ping", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		err := a.Ping(ctx, unknown)
		if !errors.Is(err, ErrHostUnreachable) {
			t.Fatalf("ping %v: %v, want host unreachable", unknown, err)
		}
		var ue *UnreachableError
		if !errors.As(err, &ue) {
			t.Fatalf("ping error %v is not an *UnreachableError", err)
		}
		if ue.From != resolverAddr || ue.Dst != unknown || ue.Code != 1 {
			t.Errorf("got %+v, want from %v for %v code 1", *ue, resolverAddr, unknown)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("took %v", d)
		}
	})
	t.Run("tcp", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		_, err := a.DialTCP(ctx, netip.AddrPortFrom(unknown, 80))
		if !errors.Is(err, syscall.EHOSTUNREACH) {
			t.Fatalf("dial: %v, want EHOSTUNREACH", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("took %v", d)
		}
	})
}

func TestDialRefused(t *testing.T) {
	leaktest.Check(t)
	a, b := newContainer(t, "10.240.0.1"), newContainer(t, "10.240.0.2")
	connect(t, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := b.DialTCP(ctx, netip.MustParseAddrPort("10.240.0.1:9"))
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial closed port: %v, want ECONNREFUSED", err)
	}
}

func TestPingTimeout(t *testing.T) {
	leaktest.Check(t)
	a := newContainer(t, "10.240.0.1") // not connected: requests go nowhere
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := a.Ping(ctx, netip.MustParseAddr("10.240.0.2"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ping: %v, want deadline exceeded", err)
	}
}

func TestDialContextCancel(t *testing.T) {
	leaktest.Check(t)
	a := newContainer(t, "10.240.0.1")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := a.DialTCP(ctx, netip.MustParseAddrPort("10.240.0.2:80"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial: %v, want deadline exceeded", err)
	}
}

func TestSendRawAndBatchRead(t *testing.T) {
	c, err := New(Config{Addr: netip.MustParseAddr("10.240.0.1"), BatchSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := c.Port()
	defer p.Close()

	// A foreign source: SendRaw must not care.
	var sent [][]byte
	for i := range 6 {
		pkt := UDPPacket(netip.MustParseAddrPort("10.240.1.99:1000"), netip.MustParseAddrPort("10.240.0.2:2000"), []byte{byte(i)})
		if err := c.SendRaw(pkt); err != nil {
			t.Fatalf("SendRaw %d: %v", i, err)
		}
		sent = append(sent, pkt)
	}
	const offset = router.Headroom
	bufs := make([][]byte, p.BatchSize())
	for i := range bufs {
		bufs[i] = make([]byte, offset+c.MTU())
	}
	sizes := make([]int, len(bufs))
	// Everything is queued already, so the first Read returns a full batch
	// and the second the rest.
	var got [][]byte
	for _, want := range []int{4, 2} {
		n, err := p.Read(bufs, sizes, offset)
		if err != nil {
			t.Fatal(err)
		}
		if n != want {
			t.Fatalf("Read returned %d packets, want %d", n, want)
		}
		for i := 0; i < n; i++ {
			got = append(got, bytes.Clone(bufs[i][offset:offset+sizes[i]]))
		}
	}
	for i := range sent {
		if !bytes.Equal(got[i], sent[i]) {
			t.Errorf("packet %d: got %x, want %x", i, got[i], sent[i])
		}
	}
	if err := c.SendRaw(nil); err == nil {
		t.Error("SendRaw(nil) succeeded")
	}
}

func TestSendRawQueueFull(t *testing.T) {
	c, err := New(Config{Addr: netip.MustParseAddr("10.240.0.1"), QueueLen: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pkt := UDPPacket(netip.MustParseAddrPort("10.240.0.1:1"), netip.MustParseAddrPort("10.240.0.2:2"), nil)
	for i := range 2 {
		if err := c.SendRaw(pkt); err != nil {
			t.Fatalf("SendRaw %d: %v", i, err)
		}
	}
	if err := c.SendRaw(pkt); !errors.Is(err, ErrNoBufferSpace) {
		t.Fatalf("SendRaw on a full queue: %v, want ErrNoBufferSpace", err)
	}
}

func TestTxDropped(t *testing.T) {
	c, err := New(Config{Addr: netip.MustParseAddr("10.240.0.1"), QueueLen: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	conn, err := c.DialUDP(netip.MustParseAddrPort("10.240.0.2:9"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for range 5 {
		conn.Write([]byte("x")) // nobody reads the Port
	}
	if got := c.TxDropped(); got != 3 {
		t.Errorf("TxDropped() = %d, want 3", got)
	}
}

func TestWriteSkipsNonIPv4(t *testing.T) {
	c := newContainer(t, "10.240.0.1")
	p := c.Port()
	defer p.Close()
	const offset = router.Headroom
	bufs := [][]byte{
		make([]byte, offset),                        // empty packet
		append(make([]byte, offset), 0x60, 0, 0, 0), // IPv6 version nibble
		append(make([]byte, offset), 0x45),          // truncated IPv4
	}
	n, err := p.Write(bufs, offset)
	if err != nil || n != len(bufs) {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(bufs))
	}
	if _, err := p.Write([][]byte{make([]byte, 4)}, offset); err == nil {
		t.Error("Write with offset beyond the buffer succeeded")
	}
}

func TestPortClose(t *testing.T) {
	leaktest.Check(t)
	a, b := newContainer(t, "10.240.0.1"), newContainer(t, "10.240.0.2")
	p := a.Port()
	readErr := make(chan error, 1)
	go func() {
		bufs := [][]byte{make([]byte, router.Headroom+a.MTU())}
		_, err := p.Read(bufs, make([]int, 1), router.Headroom)
		readErr <- err
	}()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-readErr; !errors.Is(err, os.ErrClosed) {
		t.Fatalf("blocked Read after Close: %v, want os.ErrClosed", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := p.Write([][]byte{make([]byte, router.Headroom+1)}, router.Headroom); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Write after Close: %v, want os.ErrClosed", err)
	}
	if _, err := p.Read([][]byte{make([]byte, 100)}, []int{0}, 0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Read after Close: %v, want os.ErrClosed", err)
	}

	// The container outlives its port handle: attach it again.
	connect(t, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Ping(ctx, b.Addr()); err != nil {
		t.Fatalf("ping after re-attach: %v", err)
	}
}

func TestContainerClose(t *testing.T) {
	leaktest.Check(t)
	a, b := newContainer(t, "10.240.0.1"), newContainer(t, "10.240.0.2")
	connect(t, a, b)

	// Leave sockets of every kind open to prove Close aborts them.
	ln, err := a.ListenTCP(80)
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := b.DialTCP(ctx, netip.MustParseAddrPort("10.240.0.1:80"))
	if err != nil {
		t.Fatal(err)
	}
	srvConn := <-accepted
	if srvConn == nil {
		t.Fatal("accept failed")
	}
	pc, err := a.ListenUDP(53)
	if err != nil {
		t.Fatal(err)
	}
	readDone := make(chan error, 1)
	go func() {
		_, _, err := pc.ReadFrom(make([]byte, 100))
		readDone <- err
	}()

	p := a.Port()
	portRead := make(chan error, 1)
	go func() {
		_, err := p.Read([][]byte{make([]byte, router.Headroom+a.MTU())}, []int{0}, router.Headroom)
		portRead <- err
	}()

	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := <-portRead; !errors.Is(err, os.ErrClosed) {
		t.Errorf("Port.Read after container Close: %v, want os.ErrClosed", err)
	}
	if err := <-readDone; err == nil {
		t.Error("UDP ReadFrom returned no error after Close")
	}
	if _, err := srvConn.Read(make([]byte, 1)); err == nil {
		t.Error("server conn Read returned no error after Close")
	}
	srvConn.Close()
	conn.Close()
	pc.Close()
	ln.Close()

	if _, err := p.Write([][]byte{make([]byte, router.Headroom+1)}, router.Headroom); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Port.Write after Close: %v", err)
	}
	if err := a.SendRaw([]byte{0x45}); !errors.Is(err, os.ErrClosed) {
		t.Errorf("SendRaw after Close: %v", err)
	}
	if _, err := a.DialTCP(ctx, netip.MustParseAddrPort("10.240.0.2:80")); !errors.Is(err, os.ErrClosed) {
		t.Errorf("DialTCP after Close: %v", err)
	}
	if _, err := a.DialUDP(netip.MustParseAddrPort("10.240.0.2:80")); !errors.Is(err, os.ErrClosed) {
		t.Errorf("DialUDP after Close: %v", err)
	}
	if _, err := a.ListenTCP(81); !errors.Is(err, os.ErrClosed) {
		t.Errorf("ListenTCP after Close: %v", err)
	}
	if _, err := a.ListenUDP(81); !errors.Is(err, os.ErrClosed) {
		t.Errorf("ListenUDP after Close: %v", err)
	}
	if err := a.Ping(ctx, b.Addr()); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Ping after Close: %v", err)
	}
}

func TestUDPPacketAccepted(t *testing.T) {
	a := newContainer(t, "10.240.0.1")
	pc, err := a.ListenUDP(7)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	p := a.Port()
	defer p.Close()
	src := netip.MustParseAddrPort("10.240.0.2:1234")
	pkt := UDPPacket(src, netip.MustParseAddrPort("10.240.0.1:7"), []byte("raw"))
	if _, err := p.Write([][]byte{append(make([]byte, router.Headroom), pkt...)}, router.Headroom); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	n, from, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatalf("the stack did not accept the packet: %v", err)
	}
	if string(buf[:n]) != "raw" || from.String() != src.String() {
		t.Errorf("got %q from %v, want %q from %v", buf[:n], from, "raw", src)
	}
}

func TestReadOversizePacketDropped(t *testing.T) {
	c := newContainer(t, "10.240.0.1")
	p := c.Port()
	defer p.Close()
	big := UDPPacket(netip.MustParseAddrPort("10.240.0.1:1"), netip.MustParseAddrPort("10.240.0.2:2"), make([]byte, 200))
	small := UDPPacket(netip.MustParseAddrPort("10.240.0.1:1"), netip.MustParseAddrPort("10.240.0.2:2"), []byte("s"))
	for _, pkt := range [][]byte{big, small} {
		if err := c.SendRaw(pkt); err != nil {
			t.Fatal(err)
		}
	}
	bufs := [][]byte{make([]byte, 100), make([]byte, 100)}
	sizes := make([]int, 2)
	n, err := p.Read(bufs, sizes, 10)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 || !bytes.Equal(bufs[0][10:10+sizes[0]], small) {
		t.Errorf("Read = %d packets, first %x; want only %x", n, bufs[0][10:10+sizes[0]], small)
	}
	if got := c.TxDropped(); got != 1 {
		t.Errorf("TxDropped() = %d, want 1", got)
	}
	if _, err := p.Read(bufs, sizes, 101); err == nil {
		t.Error("Read with offset beyond the buffers succeeded")
	}
	if _, err := p.Read(bufs, sizes[:1], 0); err == nil {
		t.Error("Read with fewer sizes than buffers succeeded")
	}
}
