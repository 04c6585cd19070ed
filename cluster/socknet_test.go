package cluster

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func TestSockTransport(t *testing.T) {
	lo := netip.MustParseAddrPort("127.0.0.1:0")
	a, err := sockNetwork{}.Listen(lo)
	if err != nil {
		t.Fatal(err)
	}
	b, err := sockNetwork{}.Listen(lo)
	if err != nil {
		_ = a.Shutdown()
		t.Fatal(err)
	}
	defer func() { _ = b.Shutdown() }()
	ip, port, err := b.FinalAdvertiseAddr("", 0)
	if err != nil || !ip.Equal(net.IPv4(127, 0, 0, 1)) || port == 0 {
		t.Fatalf("advertise %v:%d, %v", ip, port, err)
	}
	baddr := net.JoinHostPort(ip.String(), itoa(port))

	// Packets arrive as copies of their own length: the reader's buffer
	// is reused for the next one.
	msgs := [][]byte{bytes.Repeat([]byte{1}, 300), []byte{2, 3}, bytes.Repeat([]byte{4}, 1400)}
	for _, m := range msgs {
		if _, err := a.WriteToAddress(m, memberlist.Address{Addr: baddr}); err != nil {
			t.Fatal(err)
		}
	}
	var got []*memberlist.Packet
	for range msgs {
		select {
		case p := <-b.PacketCh():
			got = append(got, p)
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of %d packets arrived", len(got), len(msgs))
		}
	}
	_, aport, _ := a.FinalAdvertiseAddr("", 0)
	for i, p := range got {
		if !bytes.Equal(p.Buf, msgs[i]) || cap(p.Buf) > 2*len(msgs[i])+16 {
			t.Errorf("packet %d: %d bytes (cap %d), want %d", i, len(p.Buf), cap(p.Buf), len(msgs[i]))
		}
		if p.From.String() != net.JoinHostPort("127.0.0.1", itoa(aport)) || p.Timestamp.IsZero() {
			t.Errorf("packet %d from %v at %v", i, p.From, p.Timestamp)
		}
	}

	// Streams: a dial to b's port reaches b's StreamCh.
	c, err := a.DialAddressTimeout(memberlist.Address{Addr: baddr}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var s net.Conn
	select {
	case s = <-b.StreamCh():
	case <-time.After(5 * time.Second):
		t.Fatal("no stream")
	}
	if _, err := c.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "hi" {
		t.Fatalf("stream read %q, %v", buf, err)
	}
	_ = s.Close()

	// Shutdown returns although nobody reads a packet that is waiting to
	// be handed over, and frees the port.
	if _, err := b.WriteToAddress([]byte{9}, memberlist.Address{Addr: net.JoinHostPort("127.0.0.1", itoa(aport))}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	done := make(chan struct{})
	go func() { _ = a.Shutdown(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown blocked")
	}
	again, err := sockNetwork{}.Listen(netip.AddrPortFrom(lo.Addr(), uint16(aport)))
	if err != nil {
		t.Fatalf("port %d not free after Shutdown: %v", aport, err)
	}
	_ = again.Shutdown()
	if st := a.(*sockTransport); st.readErrors.Load()+st.acceptErrors.Load() != 0 {
		t.Errorf("socket errors counted at shutdown: %d reads, %d accepts", st.readErrors.Load(), st.acceptErrors.Load())
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
