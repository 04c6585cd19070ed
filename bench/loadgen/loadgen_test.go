package loadgen

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/leaktest"
)

func startUpstream(t *testing.T) *Upstream {
	t.Helper()
	u, err := StartUpstream(netip.MustParseAddr("198.51.100.7"), 300)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := u.Close(); err != nil {
			t.Errorf("close upstream: %v", err)
		}
	})
	return u
}

func TestDNSLoad(t *testing.T) {
	leaktest.Check(t)
	u := startUpstream(t)
	for _, unique := range []bool{false, true} {
		before := u.Queries()
		r, err := DNS(context.Background(), DNSConfig{
			Server: u.Addr(), Name: "x.bench.test", Unique: unique,
			Concurrency: 2, Duration: 200 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		if r.Completed == 0 || r.Rcodes["NOERROR"] != r.Completed || r.NoAnswer != 0 || r.Errors != 0 {
			t.Fatalf("unique=%v: %+v", unique, r)
		}
		// Queries in flight when a run ends are answered but not counted,
		// possibly after the next run has begun.
		if got := u.Queries() - before; got < r.Completed || got > r.Completed+4 {
			t.Errorf("unique=%v: upstream saw %d queries, load counted %d answers", unique, got, r.Completed)
		}
		if r.PerSecond <= 0 || r.LatencyUS.N != int(r.Completed) || r.LatencyUS.P99 < r.LatencyUS.P50 || len(r.Histogram) == 0 {
			t.Errorf("unique=%v: figures %+v", unique, r)
		}
	}
}

func TestDNSLoadTimeouts(t *testing.T) {
	leaktest.Check(t)
	// A socket that never answers: every query times out.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	r, err := DNS(context.Background(), DNSConfig{Server: pc.LocalAddr().String(), Name: "x.bench.test",
		Concurrency: 1, Duration: 300 * time.Millisecond, Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if r.Completed != 0 || r.Timeouts < 2 || r.Sent != r.Timeouts {
		t.Errorf("%+v", r)
	}
}

func TestDNSLoadCancel(t *testing.T) {
	leaktest.Check(t)
	u := startUpstream(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	if _, err := DNS(ctx, DNSConfig{Server: u.Addr(), Name: "x.bench.test", Concurrency: 2, Duration: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("cancelled run took %v", el)
	}
}

func TestDNSConfigErrors(t *testing.T) {
	for _, cfg := range []DNSConfig{
		{Server: "127.0.0.1:53", Name: "x.", Concurrency: 0, Duration: time.Second},
		{Server: "127.0.0.1:53", Name: "x.", Concurrency: 1},
		{Server: "127.0.0.1:53", Name: "bad..name", Concurrency: 1, Duration: time.Second},
	} {
		if _, err := DNS(context.Background(), cfg); err == nil {
			t.Errorf("DNS(%+v) accepted", cfg)
		}
	}
}

func TestConnLoad(t *testing.T) {
	leaktest.Check(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := ServeOneByte(ln)
	r, err := Conn(context.Background(), ConnConfig{Addr: s.Addr().String(), Concurrency: 2, Duration: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("close server: %v", err)
	}
	if r.Completed == 0 || r.Errors != 0 || r.Timeouts != 0 || s.Accepted() < r.Completed {
		t.Errorf("%+v (server accepted %d)", r, s.Accepted())
	}
	if r.Kind != "tcp-connect" || r.LatencyUS.N != int(r.Completed) {
		t.Errorf("%+v", r)
	}
	// Nothing listens any more: every attempt is refused, and counted.
	r, err = Conn(context.Background(), ConnConfig{Addr: s.Addr().String(), Concurrency: 1, Duration: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if r.Completed != 0 || r.Errors == 0 || r.FirstError == "" {
		t.Errorf("against a closed port: %+v", r)
	}
}
