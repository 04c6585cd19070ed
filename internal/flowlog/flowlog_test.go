package flowlog

import (
	"bufio"
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/leaktest"
	"github.com/vrouter/vrouter/internal/poll"
	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/router/porttest"
	"github.com/vrouter/vrouter/stack/stacktest"
)

type fakeDescriber struct{}

func (fakeDescriber) Network(vni uint32) string {
	if vni == 7 {
		return "pn-seven"
	}
	return ""
}

func (fakeDescriber) Endpoint(pn string, ip netip.Addr) (Endpoint, bool) {
	switch ip.String() {
	case "10.240.0.1":
		return Endpoint{App: "ap-1", Type: "web", Container: "c-a", Node: "n1"}, true
	case "10.240.0.2":
		return Endpoint{App: "ap-1", Type: "worker", Container: "c-b", Node: "n2"}, true
	}
	return Endpoint{}, false
}

func (fakeDescriber) EgressSource(app string) (bool, netip.Addr) { return false, netip.Addr{} }

// pair is a router with two ports in network 7 and a flow table.
type pair struct {
	r      *router.Router
	ft     *router.FlowTable
	pa, pb *porttest.Port
}

func newPair(t *testing.T) *pair {
	r := router.New(router.Config{})
	t.Cleanup(func() { r.Close() })
	ft := router.NewFlowTable(1024)
	r.EnableFlows(ft)
	p := &pair{r: r, ft: ft, pa: porttest.New(8, 1500), pb: porttest.New(8, 1500)}
	for _, x := range []struct {
		port *porttest.Port
		ip   string
	}{{p.pa, "10.240.0.1"}, {p.pb, "10.240.0.2"}} {
		if _, err := r.AddPort(x.port, router.PortConfig{Network: 7, PN: "pn-seven", Addr: netip.MustParseAddr(x.ip), Name: x.ip}); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// exchange sends n datagrams of size bytes from A to B and one back.
func (p *pair) exchange(t *testing.T, n, size int) {
	t.Helper()
	a, b := netip.MustParseAddrPort("10.240.0.1:4000"), netip.MustParseAddrPort("10.240.0.2:53")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range n {
		if err := p.pa.Send(stacktest.UDPPacket(a, b, make([]byte, size))); err != nil {
			t.Fatal(err)
		}
		if _, err := p.pb.Recv(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.pb.Send(stacktest.UDPPacket(b, a, []byte("ok"))); err != nil {
		t.Fatal(err)
	}
	if _, err := p.pa.Recv(ctx); err != nil {
		t.Fatal(err)
	}
}

func readRecords(t *testing.T, path string) []Record {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		t.Fatal(err)
	}
	defer f.Close()
	var out []Record
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

func TestIdleFlowIsLogged(t *testing.T) {
	leaktest.Check(t)
	p := newPair(t)
	path := filepath.Join(t.TempDir(), "flows.jsonl")
	l, err := Start(Config{Path: path, Table: p.ft, Describe: fakeDescriber{}, Idle: 50 * time.Millisecond, Tick: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	p.exchange(t, 3, 100)
	var recs []Record
	poll.UntilNil(t, 10*time.Second, "the flow's record", func() error {
		if recs = readRecords(t, path); len(recs) == 0 {
			return os.ErrNotExist
		}
		return nil
	})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	r := recs[0]
	want := Record{EndReason: "idle", Proto: "udp", Network: "pn-seven",
		Src:        End{Addr: "10.240.0.1", Port: 4000, App: "ap-1", Type: "web", Container: "c-a", Node: "n1"},
		Dst:        End{Addr: "10.240.0.2", Port: 53, App: "ap-1", Type: "worker", Container: "c-b", Node: "n2"},
		PacketsOut: 3, BytesOut: 3 * 128, PayloadOut: 300, PacketsIn: 1, BytesIn: 30, PayloadIn: 2}
	got := r
	got.Start, got.End, got.DurationSeconds = time.Time{}, time.Time{}, 0
	if got != want {
		t.Errorf("record\n got %+v\nwant %+v", got, want)
	}
	if r.Start.IsZero() || r.End.Before(r.Start) || r.Start.Location() != time.UTC {
		t.Errorf("times %v → %v", r.Start, r.End)
	}
	if s := l.Stats(); s.Records != 1 || s.WriteErrors != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestCloseFlushesAndStdout(t *testing.T) {
	leaktest.Check(t)
	p := newPair(t)
	var buf syncBuf
	l, err := Start(Config{Path: "-", Stdout: &buf, Table: p.ft, Describe: fakeDescriber{}})
	if err != nil {
		t.Fatal(err)
	}
	p.exchange(t, 1, 10)
	// The router adds a batch's flow counts once it has written the
	// batch, so the query's may still be on their way when its answer
	// is back. A packet to an unknown address, answered with ICMP by the
	// same port's next batch (which tracks no flow), proves they landed.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.pa.Send(stacktest.UDPPacket(netip.MustParseAddrPort("10.240.0.1:4001"), netip.MustParseAddrPort("10.240.0.9:9"), nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := p.pa.Recv(ctx); err != nil {
		t.Fatal(err)
	}
	p.r.EnableFlows(nil)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	var r Record
	if len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &r) != nil || r.EndReason != "shutdown" || r.PacketsOut != 1 {
		t.Fatalf("stdout %q", buf.String())
	}
}

func TestRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "flows.jsonl")
	r, err := openRotator(path, 100)
	if err != nil {
		t.Fatal(err)
	}
	line := []byte(strings.Repeat("x", 59) + "\n") // 60 bytes: one per file
	for range 3 {
		if _, err := r.Write(line); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{path, path + ".1"} {
		b, err := os.ReadFile(f)
		if err != nil || string(b) != string(line) {
			t.Errorf("%s: %q, %v; want one whole line", f, b, err)
		}
	}
	if n := r.rotations.Load(); n != 2 {
		t.Errorf("%d rotations, want 2", n)
	}
	// Reopening appends to what is there.
	r, err = openRotator(path, 1000)
	if err != nil {
		t.Fatal(err)
	}
	r.Write(line)
	r.Close()
	if b, _ := os.ReadFile(path); len(b) != 2*len(line) {
		t.Errorf("after reopening: %d bytes, want %d", len(b), 2*len(line))
	}
}

func TestStartRefuses(t *testing.T) {
	ft := router.NewFlowTable(16)
	for _, cfg := range []Config{
		{Path: "x", Describe: fakeDescriber{}},
		{Path: "", Table: ft, Describe: fakeDescriber{}},
		{Path: filepath.Join(t.TempDir(), "no", "such", "dir"), Table: ft, Describe: fakeDescriber{}},
	} {
		if l, err := Start(cfg); err == nil {
			l.Close()
			t.Errorf("Start(%+v) succeeded", cfg)
		}
	}
}

func TestEgressSource(t *testing.T) {
	l := &Logger{cfg: Config{Describe: fakeDescriber{}}}
	e := l.egress("ap-1", netip.MustParseAddrPort("127.0.0.1:80"), 6)
	if e.Via != "node" || e.Source != "127.0.0.1" {
		t.Errorf("node egress to loopback: %+v, want source 127.0.0.1", e)
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
