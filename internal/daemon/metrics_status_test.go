package daemon

import (
	"maps"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/metrics"
	"github.com/vrouter/vrouter/internal/supervise"
	"github.com/vrouter/vrouter/stack"
	"github.com/vrouter/vrouter/stack/stacktest"
)

// statusLeaves returns every number, bool and list of a status by its
// JSON path ("dns.counters.flood"): bools as 0/1, lists as their length.
// A nil pointer is walked as its zero value, so a part that status omits
// now (no supervisor) still needs its metrics.
func statusLeaves(prefix string, v reflect.Value, out map[string]float64) {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v = reflect.New(v.Type().Elem())
		}
		statusLeaves(prefix, v.Elem(), out)
	case reflect.Struct:
		if v.Type() == reflect.TypeOf(time.Time{}) {
			return
		}
		for i := range v.NumField() {
			f := v.Type().Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if !f.IsExported() || name == "-" || name == "" {
				continue
			}
			statusLeaves(join(prefix, name), v.Field(i), out)
		}
	case reflect.Map:
		for _, k := range v.MapKeys() {
			statusLeaves(join(prefix, k.String()), v.MapIndex(k), out)
		}
	case reflect.Slice:
		out[prefix] = float64(v.Len())
	case reflect.Bool:
		out[prefix] = 0
		if v.Bool() {
			out[prefix] = 1
		}
	case reflect.Int, reflect.Int64, reflect.Int32:
		out[prefix] = float64(v.Int())
	case reflect.Uint64, reflect.Uint32, reflect.Uint:
		out[prefix] = float64(v.Uint())
	case reflect.Float64:
		out[prefix] = v.Float()
	}
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// metricRef is the series that exports one status value.
type metricRef struct {
	name   string
	labels map[string]string
	// sum: the status value is the sum of the family's samples;
	// atLeast: the metric counts more than status (claims raced too).
	sum, atLeast bool
}

func ref(name string, kv ...string) metricRef {
	m := metricRef{name: "vrouter_" + name, labels: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		m.labels[kv[i]] = kv[i+1]
	}
	return m
}

// notExported are the status numbers without a metric, and why.
var notExported = map[string]string{
	"pid":            "a process id, not a measure",
	"supervisor_pid": "a process id, not a measure",
	"uptime_seconds": "process_start_time_seconds has it",
	"mtu":            "configuration (--mtu)",
	"dns.upstreams":  "configuration (--dns-upstream)",
}

// statusMetrics maps the status paths with fixed names to their series;
// statusMetric adds the maps keyed by reason or counter name.
var statusMetrics = map[string]metricRef{
	"containers":                  ref("ports_attached"),
	"networks":                    ref("networks"),
	"alarms":                      ref("alarms"),
	"restarts":                    ref("worker_restarts_total"),
	"supervisor.crash_loop":       ref("worker_crash_loop"),
	"supervisor.backoff_seconds":  ref("worker_restart_backoff_seconds"),
	"supervisor.upgrades":         ref("upgrades_total"),
	"supervisor.upgrade_attempts": ref("upgrade_attempts_total"),
	"supervisor.restore_failed":   ref("restore_failed_total"),
	"supervisor.dropped":          ref("ports_dropped"),

	"dns.counters.local":           ref("dns_queries_total", "kind", "private"),
	"dns.counters.forwarded":       ref("dns_queries_total", "kind", "forwarded"),
	"dns.counters.cache_hits":      ref("dns_queries_total", "kind", "cache_hit"),
	"dns.counters.upstream_errors": ref("dns_events_total", "event", "upstream_error"),
	"dns.counters.tcp_retries":     ref("dns_events_total", "event", "tcp_retry"),
	"dns.counters.flood":           ref("dns_events_total", "event", "flood"),
	"dns.counters.flood_network":   ref("dns_events_total", "event", "flood_network"),
	"dns.counters.truncated":       ref("dns_events_total", "event", "truncated"),
	"dns.counters.tcp_refused":     ref("dns_events_total", "event", "tcp_refused"),
	"dns.counters.rate_dropped":    ref("dns_events_total", "event", "rate_dropped"),
	"dns.counters.rate_refused":    ref("dns_events_total", "event", "rate_refused"),

	"egress.tcp_dials":      ref("egress_flows_opened_total", "proto", "tcp"),
	"egress.udp_flows":      ref("egress_flows_opened_total", "proto", "udp"),
	"egress.pings_sent":     ref("egress_flows_opened_total", "proto", "icmp"),
	"egress.tcp_active":     ref("egress_flows_active", "proto", "tcp"),
	"egress.udp_active":     ref("egress_flows_active", "proto", "udp"),
	"egress.tcp_refused":    ref("egress_flows_refused_total", "proto", "tcp", "reason", "refused"),
	"egress.tcp_failed":     ref("egress_flows_refused_total", "proto", "tcp", "reason", "failed"),
	"egress.ping_errors":    ref("egress_flows_refused_total", "proto", "icmp", "reason", "error"),
	"egress.ping_replies":   ref("egress_ping_replies_total"),
	"egress.denied":         ref("egress_denied_total"),
	"egress.limited":        ref("egress_limited_total"),
	"egress.deny_addrs":     ref("egress_deny_addresses"),
	"egress.deny_refreshes": ref("egress_deny_refreshes_total"),

	"budget.max_fds":          ref("egress_budget_max_fds"),
	"budget.fds":              ref("egress_budget_fds"),
	"budget.max_memory_bytes": ref("egress_budget_max_memory_bytes"),
	"budget.memory_bytes":     ref("egress_budget_memory_bytes"),
	"budget.networks":         ref("egress_budget_networks"),

	"cluster.msgs_received":          {name: "vrouter_cluster_gossip_messages_total", sum: true},
	"cluster.msgs_bad_version":       ref("cluster_gossip_messages_total", "result", "bad_version"),
	"cluster.msgs_malformed":         ref("cluster_gossip_messages_total", "result", "malformed"),
	"cluster.records_applied":        ref("cluster_records_merged_total", "result", "applied"),
	"cluster.records_duplicate":      ref("cluster_records_merged_total", "result", "duplicate"),
	"cluster.records_rejected":       ref("cluster_records_merged_total", "result", "rejected"),
	"cluster.records_stale":          ref("cluster_records_merged_total", "result", "stale"),
	"cluster.records_bad_signature":  ref("cluster_records_merged_total", "result", "bad_signature"),
	"cluster.records_unknown_signer": ref("cluster_records_merged_total", "result", "unknown_signer"),
	"cluster.records_bad_claim":      ref("cluster_records_merged_total", "result", "bad_claim"),
	"cluster.claims_lost":            {name: "vrouter_cluster_claim_conflicts_total", atLeast: true},
	"cluster.meta_errors":            ref("cluster_meta_errors_total"),
	"cluster.meta_unsigned":          ref("cluster_meta_refused_total", "reason", "unsigned"),
	"cluster.meta_key_changed":       ref("cluster_meta_refused_total", "reason", "key_changed"),
	"cluster.meta_stale":             ref("cluster_meta_refused_total", "reason", "stale"),
	"cluster.gossip_warnings":        ref("cluster_gossip_warnings_total"),
	"cluster.gossip_undecryptable":   ref("cluster_gossip_undecryptable_total"),
	"cluster.gossip_socket_errors":   ref("cluster_gossip_socket_errors_total"),
}

func statusMetric(path string) (metricRef, bool) {
	if m, ok := statusMetrics[path]; ok {
		return m, true
	}
	if ev, ok := strings.CutPrefix(path, "counters."); ok {
		if c, ok := strings.CutSuffix(ev, "_bytes"); ok {
			return ref("router_bytes_total", "counter", c), true
		}
		return ref("router_events_total", "event", ev), true
	}
	for prefix, m := range map[string]metricRef{
		"drops.":          ref("drops_total"),
		"dns.rcodes.":     ref("dns_responses_total"),
		"budget.refused.": ref("egress_budget_refused_total"),
	} {
		if key, ok := strings.CutPrefix(path, prefix); ok {
			label := map[string]string{"drops.": "reason", "dns.rcodes.": "rcode", "budget.refused.": "reason"}[prefix]
			m.labels = map[string]string{label: key}
			return m, true
		}
	}
	return metricRef{}, false
}

// sample is the value of m in fams, and whether it is there.
func sample(fams map[string]*dto.MetricFamily, m metricRef) (float64, bool) {
	f := fams[m.name]
	if f == nil {
		return 0, false
	}
	sum, found := 0.0, false
next:
	for _, s := range f.Metric {
		matched := 0
		for _, l := range s.Label {
			if want, ok := m.labels[l.GetName()]; ok {
				if want != l.GetValue() {
					continue next
				}
				matched++
			}
		}
		if matched != len(m.labels) {
			continue
		}
		v := s.GetGauge().GetValue()
		if s.Counter != nil {
			v = s.Counter.GetValue()
		}
		if !m.sum {
			return v, true
		}
		sum, found = sum+v, true
	}
	return sum, found
}

// TestStatusCountersHaveMetrics walks every number of `status --json` and
// checks that a metric exports it with the same value: a counter added to
// status without its metric fails here.
func TestStatusCountersHaveMetrics(t *testing.T) {
	td := startDaemonWith(t, func(c *Config) {
		c.EgressAllowLoopback = true
		c.EgressMaxFDs = 4 // a container may hold 2
		c.Supervision = func() supervise.Handover {
			return supervise.Handover{SupervisorPID: 42, Restarts: 3, Upgrades: 1, Attempts: 2, Backoff: 0.5, CrashLoop: true, Dropped: []string{"c-1"}}
		}
	})
	a, err := td.attach(t, control.AttachRequest{Network: testPN, App: testApp, Type: "web"})
	if err != nil {
		t.Fatal(err)
	}
	// Three UDP flows to loopback: the third is over the container's half
	// of the budget and refused (container_max).
	var sinks []netip.AddrPort
	for range 3 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		sinks = append(sinks, netip.MustParseAddrPort(pc.LocalAddr().String()))
	}
	port := td.ports.all()[0]
	from := netip.MustParseAddr(a.IP)
	for i, to := range sinks {
		if err := port.Send(stacktest.UDPPacket(netip.AddrPortFrom(from, uint16(4000+i)), to, []byte("x"))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "two UDP flows held and one refused", func() bool {
		b := td.status().Budget
		return b.FDs == 2 && b.Refused[stack.RefusedContainerMax] == 1
	})

	h := metrics.Handler(td.Daemon)
	before := map[string]float64{}
	statusLeaves("", reflect.ValueOf(td.status()), before)
	fams := scrape(t, h)
	after := map[string]float64{}
	statusLeaves("", reflect.ValueOf(td.status()), after)

	for _, p := range []string{"budget.refused.container_max", "dns.counters.flood_network", "supervisor.restore_failed", "cluster.gossip_undecryptable", "egress.deny_addrs", "drops.spoofed_source"} {
		if _, ok := after[p]; !ok {
			t.Fatalf("the walk of status missed %s (it found %d values): broken", p, len(after))
		}
	}
	used := map[string]bool{}
	for _, p := range slices.Sorted(maps.Keys(after)) {
		if _, ok := notExported[p]; ok {
			used[p] = true
			continue
		}
		m, ok := statusMetric(p)
		if !ok {
			t.Errorf("status %s has no metric: export it (internal/metrics) or list it in notExported with the reason", p)
			continue
		}
		used[p] = true
		got, ok := sample(fams, m)
		if !ok {
			t.Errorf("status %s: no series %s%v in the scrape", p, m.name, m.labels)
			continue
		}
		lo, hi := min(before[p], after[p]), max(before[p], after[p])
		if m.atLeast {
			hi = got
		}
		if got < lo || got > hi {
			t.Errorf("status %s = %v (then %v), metric %s%v = %v", p, before[p], after[p], m.name, m.labels, got)
		}
	}
	for p := range statusMetrics {
		if !used[p] {
			t.Errorf("statusMetrics maps %s, which status does not have", p)
		}
	}
	for p := range notExported {
		if !used[p] {
			t.Errorf("notExported lists %s, which status does not have", p)
		}
	}

	// The container's and its network's shares of the budget.
	web := map[string]string{"network": testPN, "container": a.ID}
	if got := value(t, fams, "vrouter_container_egress_budget_fds", web); got != 2 {
		t.Errorf("container budget fds %v, want 2", got)
	}
	if got := value(t, fams, "vrouter_container_egress_budget_memory_bytes", web); got <= 0 {
		t.Errorf("container budget memory %v, want > 0", got)
	}
	if got := value(t, fams, "vrouter_network_egress_budget_fds", map[string]string{"network": testPN}); got != 2 {
		t.Errorf("network budget fds %v, want 2", got)
	}
	if got := value(t, fams, "vrouter_egress_budget_refused_total", map[string]string{"reason": "container_max"}); got != 1 {
		t.Errorf("refused container_max %v, want 1", got)
	}
}
