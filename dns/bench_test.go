package dns

import (
	"fmt"
	"net"
	"runtime"
	"sync/atomic"
	"testing"

	mdns "github.com/miekg/dns"
)

// nestedView is shaped like the daemon's index (network → app → records):
// two map lookups, no allocation.
type nestedView map[string]map[string][]Record

func (v nestedView) Containers(pn, app string) []Record { return v[pn][app] }

// discardWriter drops responses; packWriter packs them like the server.
type discardWriter struct{ remote net.Addr }

func (w *discardWriter) LocalAddr() net.Addr         { return w.remote }
func (w *discardWriter) RemoteAddr() net.Addr        { return w.remote }
func (w *discardWriter) WriteMsg(m *mdns.Msg) error  { return nil }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) Close() error                { return nil }
func (w *discardWriter) TsigStatus() error           { return nil }
func (w *discardWriter) TsigTimersOnly(bool)         {}
func (w *discardWriter) Hijack()                     {}

type packWriter struct {
	discardWriter
	buf []byte
}

func (w *packWriter) WriteMsg(m *mdns.Msg) error {
	b, err := m.PackBuffer(w.buf)
	w.buf = b[:0]
	return err
}

// BenchmarkLocalQuery measures a private A query (two web containers)
// through ServeDNS, as the server calls it: "handler" stops at WriteMsg,
// "pack" also packs the response as the UDP writer does.
func BenchmarkLocalQuery(b *testing.B) {
	tv := testView()
	v := nestedView{pnA: {app1: tv[pnA+"/"+app1]}}
	r, err := New(Config{View: v})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	h := r.Handler(pnA)
	req := wireQuery(b, webName, mdns.TypeA)
	remote := &net.UDPAddr{IP: net.IPv4(10, 240, 0, 5), Port: 40000}
	for _, bc := range []struct {
		name string
		w    mdns.ResponseWriter
	}{
		{"handler", &discardWriter{remote: remote}},
		{"pack", &packWriter{discardWriter: discardWriter{remote: remote}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				h.ServeDNS(bc.w, req)
			}
		})
	}
}

// BenchmarkForwardUncached measures forwarded queries that no cache can
// answer, through ServeDNS to a fake upstream on loopback: 16 clients with
// one query in flight each, as the bench's load generator. The figure
// includes the upstream's work (a miekg server in this process).
func BenchmarkForwardUncached(b *testing.B) {
	up := startUpstream(b, answerA("127.0.0.8", 60))
	r := newResolver(b, Config{Upstreams: []string{up.addr}, CacheSize: -1})
	h := r.Handler(pnA)
	var client atomic.Uint32
	b.ReportAllocs()
	b.SetParallelism(max(1, 16/runtime.GOMAXPROCS(0)))
	b.RunParallel(func(pb *testing.PB) {
		c := client.Add(1)
		// Each client asks its own name: no two queries share a flight.
		req := wireQuery(b, fmt.Sprintf("c%d.bench.test.", c), mdns.TypeA)
		w := &discardWriter{remote: &net.UDPAddr{IP: net.IPv4(10, 240, 0, byte(c)), Port: 40000}}
		for pb.Next() {
			h.ServeDNS(w, req)
		}
	})
	b.StopTimer()
	if st := r.Stats(); st.UpstreamErrors != 0 || st.Rcodes["NOERROR"] == 0 {
		b.Fatalf("upstream errors %d, rcodes %v", st.UpstreamErrors, st.Rcodes)
	}
}

// asyncBenchWriter signals Done on a channel that the client reuses.
type asyncBenchWriter struct {
	discardWriter
	done chan struct{}
}

func (w *asyncBenchWriter) Done() { w.done <- struct{}{} }

// BenchmarkForwardUncachedAsync is BenchmarkForwardUncached through
// ServeDNSAsync, as the stack's UDP fast path calls it.
func BenchmarkForwardUncachedAsync(b *testing.B) {
	up := startUpstream(b, answerA("127.0.0.8", 60))
	r := newResolver(b, Config{Upstreams: []string{up.addr}, CacheSize: -1})
	h := r.Handler(pnA).(*netHandler)
	var client atomic.Uint32
	b.ReportAllocs()
	b.SetParallelism(max(1, 16/runtime.GOMAXPROCS(0)))
	b.RunParallel(func(pb *testing.PB) {
		c := client.Add(1)
		req := wireQuery(b, fmt.Sprintf("c%d.bench.test.", c), mdns.TypeA)
		w := &asyncBenchWriter{discardWriter: discardWriter{remote: &net.UDPAddr{IP: net.IPv4(10, 240, 0, byte(c)), Port: 40000}}, done: make(chan struct{}, 1)}
		for pb.Next() {
			if !h.ServeDNSAsync(w, req) {
				b.Error("declined")
				return
			}
			<-w.done
		}
	})
	b.StopTimer()
	if st := r.Stats(); st.UpstreamErrors != 0 || st.Rcodes["NOERROR"] == 0 {
		b.Fatalf("upstream errors %d, rcodes %v", st.UpstreamErrors, st.Rcodes)
	}
}
