package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	"github.com/vrouter/vrouter/bench/loadgen"
	"github.com/vrouter/vrouter/bench/report"
)

// scenDNS: queries per second and latency from a container to its
// resolver, for a private name, a forwarded name the daemon has cached and
// forwarded names it cannot have cached (a new name per query); beside the
// same load sent straight to the fake upstream on loopback (miekg/dns, no
// router in between).
func (s *Suite) scenDNS(ctx context.Context, sc *scope, out *report.Scenario) error {
	if err := s.needRoot(); err != nil {
		return err
	}
	if err := s.needTools("ip", "setpriv"); err != nil {
		return err
	}
	d, err := s.startDaemon(ctx, sc, "vrb-dns")
	if err != nil {
		return err
	}
	a, b, err := s.twoContainers(ctx, sc, d, d)
	if err != nil {
		return err
	}
	private := ""
	for _, n := range b.c.Names {
		if strings.HasPrefix(n, "2.web.") || strings.HasPrefix(n, "1.web.") {
			private = n
			break
		}
	}
	if private == "" {
		return fmt.Errorf("attach gave no N.web name: %v", b.c.Names)
	}
	resolver := net.JoinHostPort(a.c.Resolver, "53")
	modes := []struct {
		name, metric, qname string
		unique              bool
		conc                int
	}{
		{"private", "private name (N.TYPE.APP.PN)", private, false, s.p.dnsConc},
		{"cached", "forwarded name, cached by the daemon", "x.bench.test.", false, s.p.dnsConc},
		{"unique", "forwarded names, new per query (no cache hit)", "bench.test.", true, s.p.dnsUniqueConc},
	}
	for _, m := range modes {
		vr := &path{name: "vrouter", client: a.ns, dst: resolver, fwd: []int{d.worker()}}
		direct := &path{name: "miekg/dns on loopback, no router", dst: s.upstream.Addr()}
		measure := s.measureDNS(m.qname, m.unique, m.conc)
		res := s.compare(ctx, sc, s.p.loadRuns, measure, vr, direct)
		details := []string{"p50_us", "p99_us", "timeouts", "errors", "upstream_queries", "answered", "forwarder_cores"}
		qps := report.Row{Metric: "q/s, " + m.metric, Unit: "q/s", Better: "higher", Chart: "throughput",
			Subject: res.figure(0, "qps", details...), Baseline: ptr(res.figure(1, "qps", details...)), Target: "≥ 34000 q/s"}
		p99 := report.Row{Metric: "p99 latency, " + m.metric, Unit: "µs", Better: "lower", Chart: "latency",
			Subject: res.figure(0, "p99_us"), Baseline: ptr(res.figure(1, "p99_us")), Target: "< 2000 µs"}
		out.Rows = append(out.Rows, qps, p99)
		if f := qps.Subject; f.OK() {
			out.Notes = append(out.Notes, fmt.Sprintf("%s: the upstream answered %.0f queries while vrouter answered %.0f (median run)",
				m.name, f.Detail["upstream_queries"], f.Detail["answered"]))
		}
	}
	var st status
	if err := s.cli(ctx, d, &st, "status", "--json"); err == nil {
		out.Notes = append(out.Notes, "daemon DNS counters after the runs: "+formatCounters(st.DNS.Counters)+"; drops: "+formatCounters(nonZero(st.Drops)))
	}
	out.Notes = append(out.Notes,
		fmt.Sprintf("load: bench/cmd/dnsload in the container, %d clients with one UDP query in flight each (%d for unique names: the daemon forwards at most 32 at a time per container); the router limits a container to 50 000 packets/s towards its resolver", s.p.dnsConc, s.p.dnsUniqueConc),
		"the fake upstream runs in the bench driver on this machine and shares its two cores with the daemon and the load generator")
	return nil
}

// measureDNS runs dnsload in the path's client namespace (the host's for
// the direct baseline) and checks that the answers are answers.
func (s *Suite) measureDNS(qname string, unique bool, conc int) measureFn {
	return func(ctx context.Context, sc *scope, p *path) (sample, error) {
		args := []string{s.cfg.DNSLoad, "-server", p.dst, "-name", qname, "-c", strconv.Itoa(conc), "-d", s.p.loadSeconds.String()}
		if unique {
			args = append(args, "-unique")
		}
		up0 := s.upstream.Queries()
		meter := startCPU(p.fwd)
		var r loadgen.Result
		if err := s.runJSON(ctx, p.client, &r, args...); err != nil {
			return nil, err
		}
		smp := sample{
			"qps": r.PerSecond, "p50_us": r.LatencyUS.P50, "p99_us": r.LatencyUS.P99,
			"timeouts": float64(r.Timeouts), "errors": float64(r.Errors), "answered": float64(r.Completed),
			"upstream_queries": float64(s.upstream.Queries() - up0),
		}
		if c, ok := meter.cores(); ok {
			smp["forwarder_cores"] = c
		}
		if r.Completed == 0 {
			return nil, fmt.Errorf("no answer (%d sent, %d timeouts, %d errors: %s)", r.Sent, r.Timeouts, r.Errors, r.FirstError)
		}
		good := r.Rcodes["NOERROR"] - min(r.NoAnswer, r.Rcodes["NOERROR"])
		if float64(good) < 0.99*float64(r.Completed) {
			return nil, errors.New("fewer than 99% of the answers carried a record: rcodes " + formatCounters(r.Rcodes) +
				fmt.Sprintf(", %d NOERROR without answer", r.NoAnswer))
		}
		return smp, nil
	}
}

func formatCounters(m map[string]uint64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

func nonZero(m map[string]uint64) map[string]uint64 {
	out := make(map[string]uint64)
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}
