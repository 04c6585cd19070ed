// Package report holds the results of one bench run and renders them: the
// JSON file (the raw record), the text table and the SVG chart.
package report

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"time"
)

// Format is the version of the JSON layout; bump it when a field changes
// meaning.
const Format = 1

// Report is one run of the suite.
type Report struct {
	Format    int               `json:"format"`
	RunID     string            `json:"run_id"`
	Mode      string            `json:"mode"` // "quick" or "full"
	Started   time.Time         `json:"started"`
	Seconds   float64           `json:"seconds"`
	Machine   Machine           `json:"machine"`
	Versions  map[string]string `json:"versions"`
	MTUs      map[string]int    `json:"mtus"`
	Scenarios []Scenario        `json:"scenarios"`
	Files     map[string]string `json:"files,omitempty"` // kind → path of the files written with this report
}

// Machine describes where the run happened.
type Machine struct {
	CPU               string  `json:"cpu"`
	Cores             int     `json:"cores"`
	Kernel            string  `json:"kernel"`
	MemoryGiB         float64 `json:"memory_gib"`
	CongestionControl string  `json:"tcp_congestion_control"`
	LoadAvg           string  `json:"loadavg_at_start"` // other users of a shared machine show up here
	LoadAvgEnd        string  `json:"loadavg_at_end,omitempty"`
}

// Line is the one-line description printed above the table and in the
// README.
func (m Machine) Line() string {
	s := fmt.Sprintf("%s, %d cores, kernel %s, %.1f GiB, TCP %s, load average at start %s",
		m.CPU, m.Cores, m.Kernel, m.MemoryGiB, m.CongestionControl, m.LoadAvg)
	if m.LoadAvgEnd != "" {
		s += ", at end " + m.LoadAvgEnd
	}
	return s
}

// Scenario is one of the scenarios (ID "1"…"8", "10") or the Go
// micro-benchmarks (ID "micro").
type Scenario struct {
	ID      string   `json:"id"`
	Title   string   `json:"title"`
	Skipped string   `json:"skipped,omitempty"` // the whole scenario did not run, and why
	Error   string   `json:"error,omitempty"`   // it ran and failed
	Rows    []Row    `json:"rows"`
	Notes   []string `json:"notes,omitempty"`
	Seconds float64  `json:"seconds"`
}

// Row is one figure of vrouter beside its baseline.
type Row struct {
	Metric   string   `json:"metric"`
	Unit     string   `json:"unit"`
	Better   string   `json:"better"`          // "higher" or "lower"
	Chart    string   `json:"chart,omitempty"` // "throughput", "latency" or "" (not charted)
	Subject  Figure   `json:"vrouter"`
	Baseline *Figure  `json:"baseline,omitempty"`
	Ratio    *float64 `json:"ratio,omitempty"` // Subject / Baseline, filled by Finish
	Target   string   `json:"target,omitempty"`
}

// Figure is one measured value: the median of Samples, or the reason there
// is none.
type Figure struct {
	Name    string             `json:"name"`
	MTU     int                `json:"mtu,omitempty"`
	Value   float64            `json:"value"`
	Samples []float64          `json:"samples,omitempty"`
	Skipped string             `json:"skipped,omitempty"`
	Error   string             `json:"error,omitempty"`
	Detail  map[string]float64 `json:"detail,omitempty"` // e.g. loss_percent, forwarder_cores, cpu_cores_per_gbit
}

// OK reports whether f holds a value.
func (f Figure) OK() bool {
	return f.Skipped == "" && f.Error == "" && !math.IsNaN(f.Value) && !math.IsInf(f.Value, 0)
}

// Finish fills the ratios and clears values JSON cannot carry.
func (r *Report) Finish() {
	for i := range r.Scenarios {
		for j := range r.Scenarios[i].Rows {
			row := &r.Scenarios[i].Rows[j]
			row.Subject.sanitize()
			row.Ratio = nil
			if row.Baseline == nil {
				continue
			}
			row.Baseline.sanitize()
			if row.Subject.OK() && row.Baseline.OK() && row.Baseline.Value != 0 {
				q := row.Subject.Value / row.Baseline.Value
				row.Ratio = &q
			}
		}
	}
}

func (f *Figure) sanitize() {
	if f.Skipped == "" && f.Error == "" && (math.IsNaN(f.Value) || math.IsInf(f.Value, 0)) {
		f.Error = "no value"
	}
	if !f.OK() {
		f.Value = 0
	}
	for k, v := range f.Detail {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			delete(f.Detail, k)
		}
	}
	clean := f.Samples[:0]
	for _, v := range f.Samples {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			clean = append(clean, v)
		}
	}
	f.Samples = clean
}

// WriteJSON writes r to path (indented, 0644).
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// Failed lists every scenario or figure that failed (not skipped), once
// per scenario, path and error: a path that failed fails all its rows.
func (r *Report) Failed() []string {
	var out []string
	seen := map[string]bool{}
	for _, s := range r.Scenarios {
		if s.Error != "" {
			out = append(out, fmt.Sprintf("%s %s: %s", s.ID, s.Title, s.Error))
		}
		for _, row := range s.Rows {
			for _, f := range []*Figure{&row.Subject, row.Baseline} {
				if f == nil || f.Error == "" {
					continue
				}
				key := s.ID + "\x00" + f.Name + "\x00" + f.Error
				if seen[key] {
					continue
				}
				seen[key] = true
				out = append(out, fmt.Sprintf("%s %s, %s (%s): %s", s.ID, s.Title, row.Metric, f.Name, f.Error))
			}
		}
	}
	return out
}
