package report

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"text/tabwriter"
)

// WriteTable prints the run as a text table: a header with the machine,
// versions and MTUs, then every scenario with each vrouter figure beside
// its baseline and the ratio.
func (r *Report) WriteTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "vrouter bench, %s run %s (id %s), %.0f s\n", r.Mode, r.Started.UTC().Format("2006-01-02 15:04:05Z"), r.RunID, r.Seconds)
	fmt.Fprintf(&b, "machine: %s\n", r.Machine.Line())
	fmt.Fprintf(&b, "versions: %s\n", joinMap(r.Versions, func(v string) string { return v }))
	fmt.Fprintf(&b, "MTUs: %s\n", joinMap(r.MTUs, func(v int) string { return fmt.Sprint(v) }))
	b.WriteString("ratio = vrouter / baseline (for latencies lower is better, so a ratio above 1 is worse)\n")
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	for _, s := range r.Scenarios {
		fmt.Fprintf(w, "\n%s. %s", s.ID, s.Title)
		switch {
		case s.Skipped != "":
			fmt.Fprintf(w, ": skipped: %s\n", s.Skipped)
			continue
		case s.Error != "":
			fmt.Fprintf(w, ": error: %s\n", s.Error)
		default:
			fmt.Fprintln(w)
		}
		if len(s.Rows) == 0 {
			continue
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  metric\tvrouter\tbaseline\tratio\ttarget")
		for _, row := range s.Rows {
			fmt.Fprintf(tw, "  %s (%s)\t%s\t%s\t%s\t%s\n", row.Metric, row.Unit, cell(row.Subject, false),
				baselineCell(row.Baseline), ratioCell(row.Ratio), row.Target)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, n := range s.Notes {
			fmt.Fprintf(w, "  note: %s\n", n)
		}
	}
	return nil
}

func baselineCell(f *Figure) string {
	if f == nil {
		return "-"
	}
	return cell(*f, true)
}

func cell(f Figure, named bool) string {
	var v string
	switch {
	case f.Skipped != "":
		v = "skipped: " + f.Skipped
	case f.Error != "":
		v = "error: " + shorten(f.Error, 60)
	default:
		v = Num(f.Value)
		if d, ok := f.Detail["loss_percent"]; ok {
			v += fmt.Sprintf(" (loss %.1f%%)", d)
		}
		if d, ok := f.Detail["allocs_per_op"]; ok {
			v += fmt.Sprintf(" (%s allocs/op)", Num(d))
		}
	}
	if named {
		name := f.Name
		if f.MTU > 0 && !strings.Contains(name, fmt.Sprint(f.MTU)) {
			name += fmt.Sprintf(" mtu %d", f.MTU)
		}
		v = fmt.Sprintf("%s [%s]", v, name)
	}
	return v
}

func ratioCell(q *float64) string {
	if q == nil {
		return "-"
	}
	return fmt.Sprintf("%.2f×", *q)
}

// Num formats v with three significant digits, without exponent for the
// ranges the suite prints.
func Num(v float64) string {
	a := math.Abs(v)
	switch {
	case v == 0:
		return "0"
	case a >= 1000:
		return fmt.Sprintf("%.0f", v)
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

func shorten(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

func joinMap[V any](m map[string]V, f func(V) string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+" "+f(m[k]))
	}
	return strings.Join(parts, ", ")
}
