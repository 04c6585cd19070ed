package daemon

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/flowlog"
	"github.com/vrouter/vrouter/internal/metrics"
	"github.com/vrouter/vrouter/stack/stacktest"
)

// scrape reads /metrics of d's handler and returns the families by name.
func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", rec.Code, rec.Body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value returns the sample of family name whose labels include want.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no sample of %s with %v", name, want)
	return 0
}

func TestMetricsScrape(t *testing.T) {
	up := startUpstream(t)
	td := startDaemonWith(t, func(c *Config) { c.DNSUpstreams = []netip.AddrPort{netip.MustParseAddrPort(up)} })
	a, err := td.attach(t, control.AttachRequest{Network: testPN, App: testApp, Type: "web"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := td.attach(t, control.AttachRequest{Network: testPN, App: testApp, Type: "worker"})
	if err != nil {
		t.Fatal(err)
	}
	ports := td.ports.all()
	pa, pb := ports[0], ports[1]

	// A → B: 3 packets of 28+100 bytes; one spoofed packet; one DNS query
	// forwarded upstream.
	from := netip.AddrPortFrom(netip.MustParseAddr(a.IP), 4000)
	to := netip.AddrPortFrom(netip.MustParseAddr(b.IP), 5000)
	pkt := stacktest.UDPPacket(from, to, make([]byte, 100))
	for range 3 {
		if err := pa.Send(pkt); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range 3 {
		if _, err := pb.Recv(ctx); err != nil {
			t.Fatal(err)
		}
	}
	spoofed := stacktest.UDPPacket(netip.MustParseAddrPort("10.240.3.99:1"), to, []byte("x"))
	if err := pa.Send(spoofed); err != nil {
		t.Fatal(err)
	}
	resolve(t, pa, a.IP, "www.example.test.")

	h := metrics.Handler(td.Daemon)
	web := map[string]string{"network": testPN, "app": testApp, "type": "web", "container": a.ID}
	with := func(m map[string]string, k, v string) map[string]string {
		out := map[string]string{k: v}
		for kk, vv := range m {
			out[kk] = vv
		}
		return out
	}
	var fams map[string]*dto.MetricFamily
	waitFor(t, "the spoofed packet to be counted", func() bool {
		fams = scrape(t, h)
		return value(t, fams, "vrouter_container_drops_total", with(web, "reason", "spoofed_source")) == 1
	})
	if got := value(t, fams, "vrouter_container_forwarded_packets_total", with(web, "path", "same_node")); got != 3 {
		t.Errorf("same-node packets of A: %v, want 3", got)
	}
	if got := value(t, fams, "vrouter_container_forwarded_bytes_total", with(web, "path", "same_node")); got != 3*128 {
		t.Errorf("same-node bytes of A: %v, want %d", got, 3*128)
	}
	worker := map[string]string{"container": b.ID, "type": "worker"}
	if got := value(t, fams, "vrouter_container_packets_total", with(worker, "direction", "received")); got != 3 {
		t.Errorf("packets received by B: %v, want 3", got)
	}
	if got := value(t, fams, "vrouter_network_packets_total", map[string]string{"network": testPN, "direction": "received"}); got < 4 {
		t.Errorf("packets received in the network: %v, want at least 4 (3 + the DNS answer)", got)
	}
	if got := value(t, fams, "vrouter_drops_total", map[string]string{"reason": "spoofed_source"}); got != 1 {
		t.Errorf("node drops spoofed_source: %v, want 1", got)
	}
	if got := value(t, fams, "vrouter_dns_queries_total", map[string]string{"kind": "forwarded"}); got != 1 {
		t.Errorf("forwarded DNS queries: %v, want 1", got)
	}
	if got := value(t, fams, "vrouter_dns_responses_total", map[string]string{"rcode": "NOERROR"}); got != 1 {
		t.Errorf("NOERROR responses: %v, want 1", got)
	}
	if got := value(t, fams, "vrouter_dns_upstream_duration_seconds", nil); got != 1 {
		t.Errorf("upstream exchanges observed: %v, want 1", got)
	}
	if got := value(t, fams, "vrouter_attach_duration_seconds", nil); got != 2 {
		t.Errorf("attaches observed: %v, want 2", got)
	}
	if got := value(t, fams, "vrouter_ports_attached", nil); got != 2 {
		t.Errorf("ports attached: %v, want 2", got)
	}
	if got := value(t, fams, "vrouter_cluster_members", map[string]string{"state": "alive"}); got != 1 {
		t.Errorf("alive members: %v, want 1", got)
	}
	if got := value(t, fams, "vrouter_cluster_records", map[string]string{"kind": "container"}); got != 2 {
		t.Errorf("container records: %v, want 2", got)
	}
	if fams["go_goroutines"] == nil || fams["process_open_fds"] == nil {
		t.Error("Go runtime or process collector missing")
	}

	// A network keeps its counters after its last container left.
	for _, c := range []control.Container{a, b} {
		if err := td.call(t, &control.Request{Op: "detach", Detach: &control.DetachRequest{ID: c.ID}}, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	fams = scrape(t, h)
	if got := value(t, fams, "vrouter_network_forwarded_packets_total", map[string]string{"network": testPN, "path": "same_node"}); got != 3 {
		t.Errorf("network same-node packets after detach: %v, want 3", got)
	}
	if f := fams["vrouter_container_packets_total"]; f != nil && len(f.Metric) != 0 {
		t.Errorf("detached containers still have series: %v", f.Metric)
	}
}

func TestReadyNeedsJoin(t *testing.T) {
	alone := startDaemon(t)
	if err := alone.Ready(); err != nil {
		t.Fatalf("a node without seeds is its own cluster, yet not ready: %v", err)
	}
	// A seed nobody listens on: the join keeps failing.
	joining := startDaemonNoLeakCheck(t, func(c *Config) {
		c.Name = "joining"
		c.Join = []string{"127.0.0.1:1"}
	})
	err := joining.Ready()
	if err == nil || !strings.Contains(err.Error(), "not joined") {
		t.Fatalf("Ready before the join = %v, want not joined", err)
	}
	rec := httptest.NewRecorder()
	metrics.Handler(joining.Daemon).ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz before the join: %d %s", rec.Code, rec.Body)
	}
	joining.Close()
	if err := joining.Ready(); err == nil {
		t.Fatal("ready after Close")
	}
}

func TestMetricsListener(t *testing.T) {
	td := startDaemonWith(t, func(c *Config) { c.MetricsListen = netip.MustParseAddrPort("127.0.0.1:0") })
	url := "http://" + td.MetricsAddr().String()
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := http.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %d", path, resp.StatusCode)
		}
	}
	if err := td.Close(); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.Get(url + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatal("metrics still served after Close")
	}
}

func TestFlowLogDescribesContainers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flows.jsonl")
	td := startDaemonWith(t, func(c *Config) { c.FlowLog = path })
	a, err := td.attach(t, control.AttachRequest{Network: testPN, App: testApp, Type: "web"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := td.attach(t, control.AttachRequest{Network: testPN, App: testApp, Type: "worker"})
	if err != nil {
		t.Fatal(err)
	}
	ports := td.ports.all()
	from := netip.AddrPortFrom(netip.MustParseAddr(a.IP), 4000)
	to := netip.AddrPortFrom(netip.MustParseAddr(b.IP), 5000)
	if err := ports[0].Send(stacktest.UDPPacket(from, to, make([]byte, 100))); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := ports[1].Recv(ctx); err != nil {
		t.Fatal(err)
	}
	if st := td.Snapshot().FlowLog; st == nil || st.Live != 1 || st.Slots != flowTableSize {
		t.Fatalf("flow log state %+v, want 1 live flow", st)
	}
	if err := td.Close(); err != nil { // writes the open flow (shutdown)
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rec flowlog.Record
	if err := json.Unmarshal(raw, &rec); err != nil {
		t.Fatalf("flow log %q: %v", raw, err)
	}
	if rec.EndReason != "shutdown" || rec.Network != testPN || rec.Proto != "udp" || rec.PacketsOut != 1 || rec.PayloadOut != 100 {
		t.Errorf("record %+v", rec)
	}
	wantSrc := flowlog.End{Addr: a.IP, Port: 4000, App: testApp, Type: "web", Container: a.ID, Node: "test-node"}
	wantDst := flowlog.End{Addr: b.IP, Port: 5000, App: testApp, Type: "worker", Container: b.ID, Node: "test-node"}
	if rec.Src != wantSrc || rec.Dst != wantDst {
		t.Errorf("ends %+v → %+v\nwant %+v → %+v", rec.Src, rec.Dst, wantSrc, wantDst)
	}
}
