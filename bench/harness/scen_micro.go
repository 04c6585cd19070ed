package harness

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vrouter/vrouter/bench/parse"
	"github.com/vrouter/vrouter/bench/report"
	"github.com/vrouter/vrouter/bench/stats"
)

// scenMicro runs every Go benchmark of the repository (go test -bench,
// -benchmem), keeps the raw output beside the report for benchstat, and
// reports the median ns/op of each with its allocations.
func (s *Suite) scenMicro(ctx context.Context, sc *scope, out *report.Scenario) error {
	pkgs, err := benchPackages(s.cfg.RepoDir)
	if err != nil {
		return err
	}
	if len(pkgs) == 0 {
		return skipf("no Benchmark functions found")
	}
	raw, err := s.goBench(ctx, ".", s.p.benchtime, s.p.benchCount, pkgs...)
	file := filepath.Join(s.cfg.OutDir, s.stamp+"-micro.txt")
	if werr := os.WriteFile(file, raw, 0o644); werr == nil {
		s.rep.Files["micro"] = file
	}
	if err != nil {
		return err
	}
	benches, err := parse.ParseGoBench(raw)
	if err != nil {
		return err
	}
	s.micro = benches
	type key struct{ pkg, name string }
	var order []key
	byKey := map[key][]parse.Bench{}
	for _, b := range benches {
		k := key{b.Pkg, b.Name}
		if _, ok := byKey[k]; !ok {
			order = append(order, k)
		}
		byKey[k] = append(byKey[k], b)
	}
	for _, k := range order {
		f := report.Figure{Name: "vrouter", Detail: map[string]float64{}}
		metrics := map[string][]float64{}
		for _, b := range byKey[k] {
			for unit, v := range b.Metrics {
				metrics[unit] = append(metrics[unit], v)
			}
		}
		f.Samples = metrics["ns/op"]
		f.Value = stats.Median(f.Samples)
		units := make([]string, 0, len(metrics))
		for u := range metrics {
			units = append(units, u)
		}
		sort.Strings(units)
		for _, u := range units {
			if u != "ns/op" {
				f.Detail[detailKey(u)] = stats.Median(metrics[u])
			}
		}
		out.Rows = append(out.Rows, report.Row{
			Metric: pkgShort(k.pkg) + " " + strings.TrimPrefix(k.name, "Benchmark"), Unit: "ns/op", Better: "lower", Subject: f,
		})
	}
	out.Notes = append(out.Notes, fmt.Sprintf("go test -run '^$' -bench . -benchmem -benchtime %s -count %d %s; raw output (benchstat input): %s",
		s.p.benchtime, s.p.benchCount, strings.Join(pkgs, " "), file))
	return nil
}

// goBench runs go test -bench in the repository and returns its output.
func (s *Suite) goBench(ctx context.Context, pattern, benchtime string, count int, pkgs ...string) ([]byte, error) {
	args := append([]string{s.cfg.Go, "test", "-run", "^$", "-bench", pattern, "-benchmem",
		"-benchtime", benchtime, "-count", strconv.Itoa(count)}, pkgs...)
	return s.run(ctx, 30*time.Minute, args, func(c *exec.Cmd) { c.Dir = s.cfg.RepoDir })
}

// benchPackages lists, as ./dir/ patterns, the packages under root whose
// test files declare a benchmark. The bench suite's own packages, the e2e
// tier and internal/daemon are left out: the daemon's benchmarks build
// whole daemons with a thousand containers (a second or more per
// iteration, far too slow for -benchtime 200x), and scenario 8 measures
// attach end to end.
func benchPackages(root string) ([]string, error) {
	seen := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			base := d.Name()
			if rel != "." && (strings.HasPrefix(base, ".") || base == "testdata" || base == "vendor" ||
				rel == "bench" || rel == filepath.Join("internal", "e2e") || rel == filepath.Join("internal", "daemon")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if strings.Contains(string(b), "\nfunc Benchmark") {
			seen["./"+filepath.ToSlash(filepath.Dir(rel))+"/"] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("find benchmarks: %w", err)
	}
	out := make([]string, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
}

func pkgShort(pkg string) string {
	return strings.TrimPrefix(pkg, "github.com/vrouter/vrouter/")
}

// detailKey turns a benchmark unit into a JSON-friendly key: "allocs/op"
// → "allocs_per_op", "MB/s" → "MB_per_s".
func detailKey(unit string) string {
	return strings.ReplaceAll(unit, "/", "_per_")
}
