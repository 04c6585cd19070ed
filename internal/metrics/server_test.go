package metrics

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/hist"
	"github.com/vrouter/vrouter/internal/leaktest"
	"github.com/vrouter/vrouter/router"
)

// fakeSource serves a fixed snapshot and a settable readiness.
type fakeSource struct {
	mu    sync.Mutex
	snap  Snapshot
	ready error
}

func (f *fakeSource) Snapshot() *Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.snap
	return &s
}

func (f *fakeSource) Ready() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready
}

func testSnapshot() Snapshot {
	h := hist.New(0.01, 0.1)
	h.Observe(5 * time.Millisecond)
	var c router.Counters
	c.RxPackets, c.TxPackets, c.LocalPackets = 10, 7, 4
	c.Drops[2] = 3
	return Snapshot{
		Containers:    []Container{{Network: "pn-1", App: "ap-1", Type: "web", ID: "c1", Counters: c, EgressFDs: 4, EgressMemory: 4096}},
		Networks:      []Network{{ID: "pn-1", Counters: c}},
		Drops:         map[string]uint64{"spoofed_source": 3},
		Router:        map[string]uint64{"icmp_sent": 2, "rx_bytes": 1000},
		PortsAttached: 1,
		AttachLatency: h.Snapshot(),
		Peers:         []Peer{{Name: "node-b", Up: true, RxBytes: 5, TxBytes: 6, LastHandshake: time.Now().Add(-time.Minute)}},
		DNS:           DNS{Local: 1, Rcodes: map[string]uint64{"NOERROR": 1}, Slots: 256, UpstreamLatency: h.Snapshot()},
		Gateway:       []DedicatedEgress{{App: "ap-1", EgressIP: "127.0.0.2", Gateway: "gw-1", Active: true, Healthy: true}},
		Failovers:     []Failover{{App: "ap-1", Total: 1, Last: time.Now()}},
		Cluster:       Cluster{Members: map[string]int{"alive": 2}, Records: map[string]int{"container": 1}},
		FlowLog:       &FlowLog{Slots: 65536, Live: 3, Dropped: 2},
		Budget: Budget{
			MaxFDs: 1000, FDs: 5, MaxMemory: 1 << 30, Memory: 5000, Networks: 2,
			Refused: map[string]uint64{"node_fds": 0, "container_max": 7},
			Tenants: []BudgetTenant{{Network: "pn-1", FDs: 4, Memory: 4096}, {Network: "gateway 8388609", FDs: 1, Memory: 904}},
		},
		Worker: &Worker{Restarts: 2, UpgradeAttempts: 1},
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestServer(t *testing.T) {
	leaktest.Check(t)
	src := &fakeSource{snap: testSnapshot(), ready: errors.New("cluster not joined yet")}
	s, err := Listen("127.0.0.1:0", src, nil)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + s.Addr().String()

	if code, body := get(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get(t, base+"/readyz"); code != 503 || !strings.Contains(body, "cluster not joined yet") {
		t.Errorf("/readyz while not ready: %d %q", code, body)
	}
	src.mu.Lock()
	src.ready = nil
	src.mu.Unlock()
	if code, body := get(t, base+"/readyz"); code != 200 || body != "ok\n" {
		t.Errorf("/readyz when ready: %d %q", code, body)
	}

	code, body := get(t, base+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	for _, want := range []string{
		`vrouter_container_packets_total{app="ap-1",container="c1",direction="sent",network="pn-1",type="web"} 10`,
		`vrouter_container_drops_total{app="ap-1",container="c1",network="pn-1",reason="spoofed_source",type="web"} 3`,
		`vrouter_container_drops_total{app="ap-1",container="c1",network="pn-1",reason="no_gateway",type="web"} 0`,
		`vrouter_network_forwarded_packets_total{network="pn-1",path="same_node"} 4`,
		`vrouter_drops_total{reason="spoofed_source"} 3`,
		`vrouter_drops_total{reason="forged_source"} 0`,
		`vrouter_router_events_total{event="icmp_sent"} 2`,
		`vrouter_router_bytes_total{counter="rx"} 1000`,
		`vrouter_attach_duration_seconds_bucket{le="0.01"} 1`,
		`vrouter_overlay_peer_up{peer="node-b"} 1`,
		`vrouter_dns_responses_total{rcode="SERVFAIL"} 0`,
		`vrouter_dns_forward_slots 256`,
		`vrouter_egress_gateway_active{app="ap-1",egress_ip="127.0.0.2",gateway="gw-1"} 1`,
		`vrouter_egress_failovers_total{app="ap-1"} 1`,
		`vrouter_cluster_members{state="alive"} 2`,
		`vrouter_cluster_members{state="dead"} 0`,
		"vrouter_flow_log_flows 3",
		"vrouter_flow_log_flows_dropped_total 2",
		`vrouter_container_egress_budget_fds{app="ap-1",container="c1",network="pn-1",type="web"} 4`,
		`vrouter_egress_budget_fds 5`,
		`vrouter_egress_budget_max_memory_bytes 1.073741824e+09`,
		`vrouter_egress_budget_refused_total{reason="container_max"} 7`,
		`vrouter_egress_budget_refused_total{reason="node_fds"} 0`,
		`vrouter_network_egress_budget_fds{network="gateway 8388609"} 1`,
		`vrouter_network_egress_budget_memory_bytes{network="pn-1"} 4096`,
		`vrouter_dns_events_total{event="flood_network"} 0`,
		`vrouter_worker_restarts_total 2`,
		`vrouter_worker_crash_loop 0`,
		`vrouter_cluster_gossip_undecryptable_total 0`,
		"go_goroutines ",
		"process_open_fds ",
	} {
		if !strings.Contains(body, want+"\n") && !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	promtoolCheckMetrics(t, body)

	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("still serving after Close")
	}
}

func TestListenRefusesBadAddress(t *testing.T) {
	if _, err := Listen("127.0.0.1:notaport", &fakeSource{}, nil); err == nil {
		t.Fatal("Listen accepted a bad address")
	}
}

// promtoolCheckMetrics runs `promtool check metrics` (Debian's prometheus
// package; .ci/run installs it) on an exposition. Without promtool the
// check is skipped, except in CI, where that is a failure.
func promtoolCheckMetrics(t *testing.T, exposition string) {
	t.Helper()
	path := promtool(t)
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = strings.NewReader(exposition)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out.String())
	}
}

func promtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool not installed (Debian package prometheus)")
		}
		t.Skip("promtool not installed (Debian package prometheus)")
	}
	return path
}
