//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/vrouter/vrouter/internal/poll"
)

// metricsURL is the base URL of a daemon started with --metrics-listen.
type metricsURL string

// get returns the status code and body of path.
func (m metricsURL) get(t *testing.T, path string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(string(m) + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(b)
}

// scrape is one parsed /metrics.
type scrape struct {
	text string
	fams map[string]*dto.MetricFamily
}

func (m metricsURL) scrape(t *testing.T) scrape {
	t.Helper()
	code, body := m.get(t, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return scrape{text: body, fams: fams}
}

// value sums the samples of name whose labels include want (0 if none).
func (s scrape) value(name string, want map[string]string) float64 {
	var sum float64
	f := s.fams[name]
	if f == nil {
		return 0
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
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		}
	}
	return sum
}

func labels(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// promtoolCheck runs `promtool check metrics` (Debian package prometheus)
// on an exposition; without promtool it skips, except in CI.
func promtoolCheck(t *testing.T, exposition string) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		if h.ci {
			t.Fatal("promtool not installed (Debian package prometheus)")
		}
		t.Skip("promtool not installed (Debian package prometheus)")
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = strings.NewReader(exposition)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out.String())
	}
}

// TestMetrics: after ping, TCP, DNS, node egress and spoofed traffic from
// real containers, the daemon's /metrics (served by the unprivileged
// daemon on loopback) shows the counters moved per container, per
// network and per drop reason, and passes promtool's checks.
func TestMetrics(t *testing.T) {
	need(t)
	allowPing(t)
	in := startInternet(t)
	port := freePort(t)
	m := metricsURL(fmt.Sprintf("http://127.0.0.1:%d", port))
	d := launchDaemon(t, newStateDir(t), "--egress-allow-loopback", "--metrics-listen", fmt.Sprintf("127.0.0.1:%d", port))
	d.waitRunning(t)
	if code, body := m.get(t, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d %s", code, body)
	}
	if code, body := m.get(t, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz of a node without seeds: %d %s", code, body)
	}

	pn, app := newID("pn"), newID("ap")
	a, b := newNetns(t), newNetns(t)
	ca := d.attach(t, a, pn, app, "web")
	cb := d.attach(t, b, pn, app, "worker")
	of := func(c container, kv ...string) map[string]string {
		return labels(append([]string{"network", pn, "app", app, "type", c.Type, "container", c.ID}, kv...)...)
	}

	mustPing(t, a, cb.IP)
	const size = 1 << 20
	tcpTransfer(t, a, b, cb.IP, 5001, size)
	if got := dig(t, a, "hello."+upstreamZone, "A"); got.status != "NOERROR" {
		t.Fatalf("dig hello.%s: %s", upstreamZone, got.raw)
	}
	loopbackOut(t, a)
	tcpThrough(t, a, in, 64<<10)

	spoofed := "10.240.1.99"
	a.mustRun(t, "ip", "addr", "add", spoofed+"/22", "dev", defaultIfname)
	const n = 3
	if out, ok := ping(t, a, cb.IP, n, "-I", spoofed); ok {
		t.Fatalf("ping with spoofed source succeeded:\n%s", out)
	}

	var s scrape
	poll.UntilNil(t, 10*time.Second, "the spoofed pings in the scrape", func() error {
		s = m.scrape(t)
		if got := s.value("vrouter_container_drops_total", of(ca, "reason", "spoofed_source")); got < n {
			return fmt.Errorf("spoofed_source drops of %s: %v, want >= %d", ca.ID, got, n)
		}
		return nil
	})
	checks := []struct {
		what   string
		metric string
		labels map[string]string
		min    float64
	}{
		// TSO super-packets count once each, so only bytes scale with the size.
		{"A's packets to B (ping, TCP)", "vrouter_container_forwarded_packets_total", of(ca, "path", "same_node"), 2},
		{"A's bytes to B", "vrouter_container_forwarded_bytes_total", of(ca, "path", "same_node"), size},
		{"B's bytes received", "vrouter_container_bytes_total", of(cb, "direction", "received"), size},
		{"A's packets to the netstack (DNS, egress)", "vrouter_container_forwarded_packets_total", of(ca, "path", "stack"), 2},
		{"the network's bytes received", "vrouter_network_bytes_total", labels("network", pn, "direction", "received"), size},
		{"the network's spoofed drops", "vrouter_network_drops_total", labels("network", pn, "reason", "spoofed_source"), n},
		{"the node's spoofed drops", "vrouter_drops_total", labels("reason", "spoofed_source"), n},
		{"forwarded DNS queries", "vrouter_dns_queries_total", labels("kind", "forwarded"), 1},
		{"NOERROR responses", "vrouter_dns_responses_total", labels("rcode", "NOERROR"), 1},
		{"node egress TCP flows", "vrouter_egress_flows_opened_total", labels("proto", "tcp"), 1},
		{"ports attached", "vrouter_ports_attached", nil, 2},
		{"alive members", "vrouter_cluster_members", labels("state", "alive"), 1},
		{"container records", "vrouter_cluster_records", labels("kind", "container"), 2},
		{"open fds of the process", "process_open_fds", nil, 1},
	}
	for _, c := range checks {
		if got := s.value(c.metric, c.labels); got < c.min {
			t.Errorf("%s: %s%v = %v, want >= %v", c.what, c.metric, c.labels, got, c.min)
		}
	}
	if got := s.value("vrouter_container_drops_total", of(cb, "reason", "spoofed_source")); got != 0 {
		t.Errorf("B sent nothing spoofed, yet %v spoofed_source drops", got)
	}
	promtoolCheck(t, s.text)
}

// TestReadyz: a node started with --join is not ready (503) while its seed
// is not there, and becomes ready once it has joined.
func TestReadyz(t *testing.T) {
	need(t)
	keyFile := newClusterKey(t)
	seedPort := freePort(t)
	mport := freePort(t)
	m := metricsURL(fmt.Sprintf("http://127.0.0.1:%d", mport))
	startNode(t, "node-b", keyFile, fmt.Sprintf("127.0.0.1:%d", seedPort), "--metrics-listen", fmt.Sprintf("127.0.0.1:%d", mport))
	code, body := m.get(t, "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "not joined") {
		t.Fatalf("/readyz before the join: %d %q, want 503 not joined", code, body)
	}
	if code, _ := m.get(t, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz before the join: %d, want 200 (the process serves)", code)
	}
	restartNode(t, newStateDir(t), seedPort, "node-a", keyFile, "")
	poll.UntilNil(t, 45*time.Second, "/readyz after the seed started", func() error {
		if code, body := m.get(t, "/readyz"); code != http.StatusOK {
			return fmt.Errorf("%d %s", code, strings.TrimSpace(body))
		}
		return nil
	})
	if got := m.scrape(t).value("vrouter_cluster_members", labels("state", "alive")); got != 2 {
		t.Errorf("alive members after the join: %v, want 2", got)
	}
}
