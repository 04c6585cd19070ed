package report

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func sample() *Report {
	return &Report{
		Format: Format, RunID: "abc123", Mode: "quick",
		Started:  time.Date(2025, 11, 23, 12, 0, 0, 0, time.UTC),
		Machine:  Machine{CPU: "AMD EPYC", Cores: 2, Kernel: "6.18", MemoryGiB: 23.4, CongestionControl: "bbr", LoadAvg: "1.00 1.00 1.00"},
		Versions: map[string]string{"go": "go1.26.8", "iperf3": "3.12"},
		MTUs:     map[string]int{"vrouter port": 1390},
		Scenarios: []Scenario{
			{ID: "1", Title: "same-node PN <&>", Rows: []Row{
				{Metric: "TCP 1 stream", Unit: "Gbit/s", Better: "higher", Chart: "throughput",
					Subject:  Figure{Name: "vrouter", Value: 3, Samples: []float64{3, math.NaN()}},
					Baseline: &Figure{Name: "veth", MTU: 1390, Value: 12}, Target: "≥ 0.5×"},
				{Metric: "TCP RR p99", Unit: "µs", Better: "lower", Chart: "latency",
					Subject:  Figure{Name: "vrouter", Error: "sockperf: boom"},
					Baseline: &Figure{Name: "veth", Value: 80}},
				{Metric: "UDP 64 B", Unit: "kpps", Better: "higher",
					Subject: Figure{Name: "vrouter", Value: math.Inf(1), Detail: map[string]float64{"loss_percent": math.NaN()}}},
			}},
			{ID: "4", Title: "dedicated egress", Skipped: "not built"},
		},
	}
}

func TestFinish(t *testing.T) {
	r := sample()
	r.Finish()
	rows := r.Scenarios[0].Rows
	if rows[0].Ratio == nil || *rows[0].Ratio != 0.25 {
		t.Errorf("ratio of 3 to 12 = %v, want 0.25", rows[0].Ratio)
	}
	if rows[1].Ratio != nil {
		t.Errorf("a failed figure got a ratio %v", *rows[1].Ratio)
	}
	if len(rows[0].Subject.Samples) != 1 {
		t.Errorf("NaN sample kept: %v", rows[0].Subject.Samples)
	}
	if rows[2].Subject.OK() || rows[2].Subject.Error == "" || len(rows[2].Subject.Detail) != 0 {
		t.Errorf("an infinite value was kept: %+v", rows[2].Subject)
	}
	// What Finish leaves must be encodable: JSON has no NaN or Inf.
	if _, err := json.Marshal(r); err != nil {
		t.Fatalf("encode finished report: %v", err)
	}
	failed := r.Failed()
	if len(failed) != 2 || !strings.Contains(failed[0], "sockperf: boom") {
		t.Errorf("Failed() = %q", failed)
	}
}

func TestWriteJSONRoundTrip(t *testing.T) {
	r := sample()
	r.Finish()
	path := filepath.Join(t.TempDir(), "r.json")
	if err := r.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Scenarios[1].Skipped != "not built" || back.Scenarios[0].Rows[0].Baseline.MTU != 1390 || *back.Scenarios[0].Rows[0].Ratio != 0.25 {
		t.Errorf("round trip lost data: %+v", back.Scenarios)
	}
}

func TestWriteTable(t *testing.T) {
	r := sample()
	r.Finish()
	var b bytes.Buffer
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"machine: AMD EPYC, 2 cores, kernel 6.18", "load average at start 1.00 1.00 1.00",
		"TCP 1 stream (Gbit/s)", "3.00", "12.0 [veth mtu 1390]", "0.25×", "≥ 0.5×",
		"error: sockperf: boom",
		"4. dedicated egress: skipped: not built",
		"versions: go go1.26.8, iperf3 3.12",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestWriteSVG(t *testing.T) {
	r := sample()
	r.Finish()
	var b bytes.Buffer
	if err := r.WriteSVG(&b); err != nil {
		t.Fatal(err)
	}
	// Well-formed XML, with the scenario title escaped.
	d := xml.NewDecoder(bytes.NewReader(b.Bytes()))
	rects := 0
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v\n%s", err, b.String())
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "rect" {
			rects++
		}
	}
	// Background + vrouter and veth throughput bars + the veth latency bar.
	if rects != 4 {
		t.Errorf("%d rects, want 4:\n%s", rects, b.String())
	}
	if !strings.Contains(b.String(), "same-node PN &lt;&amp;&gt;") || !strings.Contains(b.String(), ">1. same-node PN &lt;&amp;&gt;<") {
		t.Error("header or label missing, or not escaped")
	}
	if !strings.Contains(b.String(), "vrouter: sockperf: boom") {
		t.Error("a failed figure is not named in the chart")
	}
}

func TestNum(t *testing.T) {
	for _, tt := range []struct {
		v    float64
		want string
	}{{0, "0"}, {13.54, "13.5"}, {1.234, "1.23"}, {0.01234, "0.0123"}, {34567.8, "34568"}, {250.4, "250"}} {
		if got := Num(tt.v); got != tt.want {
			t.Errorf("Num(%v) = %q, want %q", tt.v, got, tt.want)
		}
	}
}
