package stack

import (
	"context"
	"net"
	"net/netip"
	"testing"
)

// BenchmarkHostDial is one outbound TCP dial of node egress to a loopback
// listener and its close: the host side of every connection a container
// opens (the accept and close on the listener's side run concurrently).
func BenchmarkHostDial(b *testing.B) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	defer func() {
		ln.Close()
		<-accepted
	}()
	dst := ln.Addr().(*net.TCPAddr).AddrPort()
	for _, src := range []struct {
		name string
		addr netip.Addr
	}{{"any", netip.Addr{}}, {"source", loopback}} {
		b.Run(src.name, func(b *testing.B) {
			e := &egress{cfg: EgressConfig{Source: src.addr}}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				c, err := e.hostDial(ctx, "tcp4", dst)
				if err != nil {
					b.Fatal(err)
				}
				if got := c.RemoteAddr().(*net.TCPAddr).AddrPort(); got != dst {
					b.Fatalf("dialed %v, connected to %v", dst, got)
				}
				c.Close()
			}
		})
	}
}
