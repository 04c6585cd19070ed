package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vrouter/vrouter/bench/parse"
	"github.com/vrouter/vrouter/bench/report"
	"github.com/vrouter/vrouter/bench/stats"
)

// scenResources: the daemon's RSS per idle attached port with many ports in
// one network, the time one `attach --fd` takes, and allocations per
// forwarded packet from the router's micro-benchmark.
func (s *Suite) scenResources(ctx context.Context, sc *scope, out *report.Scenario) error {
	if err := s.needRoot(); err != nil {
		return err
	}
	if err := s.needTools("setpriv"); err != nil {
		return err
	}
	d, err := s.startDaemon(ctx, sc, "vrb-res")
	if err != nil {
		return err
	}
	// SIGTERM closes the ports one by one and the kernel takes ~20 ms to
	// unregister each TUN.
	d.proc.grace = 3 * time.Minute
	// Measurement pacing, not synchronisation: let the fresh daemon's
	// start-up garbage settle before the first reading.
	if err := pause(ctx, time.Second); err != nil {
		return err
	}
	rss0, err := rssKiB(d.worker())
	if err != nil {
		return fmt.Errorf("RSS before: %w", err)
	}
	n := s.p.ports
	t0 := time.Now()
	tuns, err := openTUNs("vr0", n)
	sc.add(fmt.Sprintf("close %d TUNs", len(tuns)), func() error { closeFiles(tuns); return nil })
	if err != nil {
		return fmt.Errorf("open %d TUNs: %w", n, err)
	}
	s.log.Info("TUNs open", "count", n, "took", time.Since(t0).Round(time.Millisecond))
	pn, app := newID("pn"), newID("ap")
	var attachMS []float64
	var rss1 int64 // after the first attach: the network's own cost is in
	for i, f := range tuns {
		args := []string{s.bin, "attach", "--fd", "3", "--network", pn, "--app", app, "--type", "worker", "--json", "--control", d.sock}
		start := time.Now()
		if _, err := s.run(ctx, time.Minute, args, func(c *exec.Cmd) { c.ExtraFiles = []*os.File{f} }); err != nil {
			return fmt.Errorf("attach %d of %d: %w", i+1, n, err)
		}
		attachMS = append(attachMS, float64(time.Since(start))/float64(time.Millisecond))
		if i == 0 {
			if err := pause(ctx, time.Second); err != nil {
				return err
			}
			if rss1, err = rssKiB(d.worker()); err != nil {
				return fmt.Errorf("RSS after one attach: %w", err)
			}
		}
	}
	if err := pause(ctx, time.Second); err != nil {
		return err
	}
	rssN, err := rssKiB(d.worker())
	if err != nil {
		return fmt.Errorf("RSS after: %w", err)
	}
	threads, _ := statusField(d.worker(), "Threads")
	perPort := float64(rssN-rss1) / float64(max(n-1, 1))
	att := stats.Summarize(append([]float64(nil), attachMS...))
	tenth := max(n/10, 1)
	firstMean := stats.Summarize(append([]float64(nil), attachMS[:tenth]...)).Mean
	lastMean := stats.Summarize(append([]float64(nil), attachMS[n-tenth:]...)).Mean
	one := func(name string, v float64) report.Figure { return report.Figure{Name: name, Value: v} }
	out.Rows = append(out.Rows,
		report.Row{Metric: "daemon RSS, no container", Unit: "MiB", Better: "lower", Subject: one("vrouter", float64(rss0)/1024)},
		report.Row{Metric: "daemon RSS, one port (the network and its netstack exist)", Unit: "MiB", Better: "lower", Subject: one("vrouter", float64(rss1)/1024)},
		report.Row{Metric: fmt.Sprintf("daemon RSS, %d idle ports in one PN", n), Unit: "MiB", Better: "lower", Subject: one("vrouter", float64(rssN)/1024)},
		report.Row{Metric: fmt.Sprintf("RSS per idle port (ports 2…%d)", n), Unit: "KiB", Better: "lower", Subject: one("vrouter", perPort), Target: "≤ 64 KiB"},
		report.Row{Metric: fmt.Sprintf("daemon OS threads, %d idle ports", n), Unit: "threads", Better: "lower", Subject: one("vrouter", float64(threads))},
	)
	if s.p.rssSettle > 0 {
		// The reading right after the attaches holds whatever garbage they
		// left: the Go runtime forces a GC every 2 minutes and its
		// scavenger returns freed memory gradually, so the lowest reading
		// over a longer idle spell is closer to what the ports keep.
		low := rssN
		end := time.Now().Add(s.p.rssSettle)
		for time.Now().Before(end) {
			if err := pause(ctx, 5*time.Second); err != nil {
				return err
			}
			if v, err := rssKiB(d.worker()); err == nil && v < low {
				low = v
			}
		}
		out.Rows = append(out.Rows,
			report.Row{Metric: fmt.Sprintf("daemon RSS, %d idle ports, lowest over %v idle", n, s.p.rssSettle), Unit: "MiB", Better: "lower", Subject: one("vrouter", float64(low)/1024)},
			report.Row{Metric: fmt.Sprintf("RSS per idle port after %v idle", s.p.rssSettle), Unit: "KiB", Better: "lower",
				Subject: one("vrouter", float64(low-rss1)/float64(max(n-1, 1))), Target: "≤ 64 KiB"},
		)
	}
	out.Rows = append(out.Rows,
		report.Row{Metric: "attach --fd (CLI process, end to end), mean", Unit: "ms", Better: "lower",
			Subject: report.Figure{Name: "vrouter", Value: att.Mean, Detail: map[string]float64{"p50_ms": att.P50, "max_ms": att.Max}}},
		report.Row{Metric: "attach --fd, p99", Unit: "ms", Better: "lower", Subject: one("vrouter", att.P99)},
		report.Row{Metric: fmt.Sprintf("attach --fd, mean of the first %d", tenth), Unit: "ms", Better: "lower", Subject: one("vrouter", firstMean)},
		report.Row{Metric: fmt.Sprintf("attach --fd, mean of the last %d", tenth), Unit: "ms", Better: "lower", Subject: one("vrouter", lastMean)},
	)
	out.Rows = append(out.Rows, s.allocRows(ctx)...)
	out.Notes = append(out.Notes,
		fmt.Sprintf("%d TUNs (IFF_VNET_HDR, TSO, as attach --netns makes them), each in an unnamed namespace of its own, attached one after the other with attach --fd; RSS is VmRSS of /proc/PID/status, each read 1 s after the daemon started, after the first attach and after the last (and, in a full run, the lowest of readings every 5 s over a longer idle spell)", n),
		"allocations per forwarded packet: allocs/op of BenchmarkForward (router package) divided by its batch size")
	return nil
}

// allocRows reads BenchmarkForward from the micro-benchmarks (or runs it
// when the micro scenario did not run) and reports allocations per packet.
func (s *Suite) allocRows(ctx context.Context) []report.Row {
	benches := s.micro
	if !slices.ContainsFunc(benches, isForward) {
		out, err := s.goBench(ctx, "BenchmarkForward", "200x", 1, "./router/")
		if err == nil {
			benches, err = parse.ParseGoBench(out)
		}
		if err != nil {
			return []report.Row{{Metric: "allocations per forwarded packet", Unit: "allocs", Better: "lower",
				Subject: report.Figure{Name: "vrouter", Error: err.Error()}, Target: "0"}}
		}
	}
	perBatch := map[int][]float64{}
	for _, b := range benches {
		if !isForward(b) {
			continue
		}
		_, arg, _ := strings.Cut(b.Name, "batch=")
		batch, err := strconv.Atoi(arg)
		if err != nil || batch <= 0 {
			continue
		}
		if a, ok := b.Metrics["allocs/op"]; ok {
			perBatch[batch] = append(perBatch[batch], a/float64(batch))
		}
	}
	var batches []int
	for k := range perBatch {
		batches = append(batches, k)
	}
	slices.Sort(batches)
	var rows []report.Row
	for _, batch := range batches {
		rows = append(rows, report.Row{
			Metric: fmt.Sprintf("allocations per forwarded packet (BenchmarkForward, batch %d)", batch), Unit: "allocs", Better: "lower",
			Subject: report.Figure{Name: "vrouter", Value: stats.Median(perBatch[batch]), Samples: perBatch[batch]}, Target: "0",
		})
	}
	if len(rows) == 0 {
		rows = append(rows, report.Row{Metric: "allocations per forwarded packet", Unit: "allocs", Better: "lower",
			Subject: report.Figure{Name: "vrouter", Error: "no BenchmarkForward/batch=N result with -benchmem"}, Target: "0"})
	}
	return rows
}

func isForward(b parse.Bench) bool {
	return strings.HasSuffix(b.Pkg, "/router") && strings.HasPrefix(b.Name, "BenchmarkForward/batch=")
}

// pause waits d unless ctx ends first.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
