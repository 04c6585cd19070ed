package stack

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestDNSTCPListenerBounds: connections beyond the per-client or the total
// bound are closed at once (the client reads EOF, it never hangs) and
// counted; a closed connection gives its slot back.
func TestDNSTCPListenerBounds(t *testing.T) {
	inner, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newDNSTCPListener(inner, 2, 3)
	defer l.Close()
	accepted := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dial := func(from string) net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		c, err := d.Dial("tcp4", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	refusedNow := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Read(make([]byte, 1))
		return errors.Is(err, io.EOF)
	}
	var kept []net.Conn
	for _, from := range []string{"127.0.0.1", "127.0.0.1", "127.0.0.2"} {
		dial(from)
		kept = append(kept, <-accepted)
	}
	if c := dial("127.0.0.1"); !refusedNow(c) {
		t.Fatal("a third connection of one client was not closed")
	}
	if c := dial("127.0.0.3"); !refusedNow(c) {
		t.Fatal("a connection beyond the total was not closed")
	}
	if n := l.refused.Load(); n != 2 {
		t.Fatalf("refused %d, want 2", n)
	}
	kept[0].Close()
	kept[0].Close() // the slot is given back once
	dial("127.0.0.3")
	kept = append(kept, <-accepted)
	if c := dial("127.0.0.4"); !refusedNow(c) {
		t.Fatal("the total was exceeded after a double Close")
	}
	for _, c := range kept {
		c.Close()
	}
	l.mu.Lock()
	open, clients := l.open, len(l.clients)
	l.mu.Unlock()
	if open != 0 || clients != 0 {
		t.Fatalf("%d open, %d clients after closing all", open, clients)
	}
}
