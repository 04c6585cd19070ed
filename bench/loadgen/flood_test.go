package loadgen

import (
	"context"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/leaktest"
	"github.com/vrouter/vrouter/internal/poll"
)

func TestFloodTCPHold(t *testing.T) {
	leaktest.Check(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sink := ServeHold(ln)
	defer sink.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan FloodResult, 1)
	go func() {
		r, err := Flood(ctx, FloodConfig{Mode: FloodTCPHold, Addr: ln.Addr().String(), Conns: 20, Concurrency: 4, Duration: time.Minute})
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	// The connections stay open while the flood runs: the sink holds all.
	poll.Until(t, 10*time.Second, "20 connections held", func() bool { return sink.Held() == 20 })
	// Drop ends them and the sink still accepts; the flood holds until
	// its end.
	sink.Drop()
	if n := sink.Held(); n != 0 {
		t.Fatalf("%d connections held after Drop", n)
	}
	cancel()
	r := <-done
	// A dial the sink saw complete may still return the cancellation.
	if r.Attempts != 20 || r.Established == 0 || r.Established > 20 || r.Refused+r.Timeouts+r.Errors != 0 {
		t.Fatalf("result %+v", r)
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	poll.Until(t, 10*time.Second, "the sink accepting after Drop", func() bool { return sink.Accepted() == 21 })
}

func TestFloodTCPRefused(t *testing.T) {
	leaktest.Check(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: every SYN gets a RST
	r, err := Flood(context.Background(), FloodConfig{Mode: FloodTCPHold, Addr: addr, Conns: 5, Concurrency: 2, Duration: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if r.Attempts != 5 || r.Refused != 5 || r.Established != 0 {
		t.Fatalf("result %+v", r)
	}
}

func TestFloodUDPPorts(t *testing.T) {
	leaktest.Check(t)
	sink, err := ListenUDPRange(netip.MustParseAddr("127.0.0.1"), 8, rand.IntN)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	r, err := Flood(context.Background(), FloodConfig{Mode: FloodUDPPorts, Addr: sink.Base().String(), Ports: 8, PPS: 2000, Duration: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if r.Datagrams < 8 || r.Errors != 0 {
		t.Fatalf("result %+v", r)
	}
	// Every port of the sink got datagrams.
	buf := make([]byte, 64)
	for i, c := range sink.conns {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(buf); err != nil {
			t.Errorf("port %d of the sink: %v", i, err)
		}
	}
}

func TestFloodRefusesBadConfig(t *testing.T) {
	for _, cfg := range []FloodConfig{
		{Mode: FloodTCPHold, Addr: "127.0.0.1:1", Duration: time.Second},
		{Mode: FloodUDPPorts, Addr: "127.0.0.1:65530", Ports: 10, Duration: time.Second},
		{Mode: "icmp", Duration: time.Second},
		{Mode: FloodUDPPorts, Addr: "127.0.0.1:1", Ports: 1},
	} {
		if _, err := Flood(context.Background(), cfg); err == nil {
			t.Errorf("Flood(%+v) accepted", cfg)
		}
	}
}

func TestListenUDPRangeBounds(t *testing.T) {
	if _, err := ListenUDPRange(netip.MustParseAddr("127.0.0.1"), 0, rand.IntN); err == nil {
		t.Error("0 ports accepted")
	}
	if _, err := ListenUDPRange(netip.MustParseAddr("127.0.0.1"), 20000, rand.IntN); err == nil {
		t.Error("more ports than the range accepted")
	}
}
