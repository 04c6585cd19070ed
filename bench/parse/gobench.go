package parse

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// Bench is one result line of `go test -bench`.
type Bench struct {
	Pkg     string             // from the preceding "pkg:" line
	Name    string             // without the -GOMAXPROCS suffix, e.g. "BenchmarkForward/batch=16"
	Procs   int                // the GOMAXPROCS suffix; 1 when absent
	N       int64              // iterations
	Metrics map[string]float64 // unit → value: "ns/op", "B/op", "allocs/op", "MB/s", custom ones
}

// ParseGoBench reads `go test -bench` output (the format benchstat reads)
// and returns its result lines in order. Other lines (goos, PASS, ok …)
// are skipped; a line that starts like a result but is malformed is an
// error.
func ParseGoBench(out []byte) ([]Bench, error) {
	var res []Bench
	pkg := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimSpace(p)
			continue
		}
		if !strings.HasPrefix(line, "Benchmark") {
			continue
		}
		f := strings.Fields(line)
		// A name alone on a line is what -v or a failing benchmark prints.
		if len(f) < 2 {
			continue
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue // "BenchmarkX --- FAIL" and similar
		}
		if len(f)%2 != 0 {
			return nil, fmt.Errorf("go bench line %q: values and units do not pair up", line)
		}
		b := Bench{Pkg: pkg, N: n, Procs: 1, Metrics: make(map[string]float64)}
		b.Name = f[0]
		if i := strings.LastIndexByte(f[0], '-'); i > 0 {
			if p, err := strconv.Atoi(f[0][i+1:]); err == nil && p > 0 {
				b.Name, b.Procs = f[0][:i], p
			}
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("go bench line %q: value %q: %w", line, f[i], err)
			}
			b.Metrics[f[i+1]] = v
		}
		res = append(res, b)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read go bench output: %w", err)
	}
	return res, nil
}
