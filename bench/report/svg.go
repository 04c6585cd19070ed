package report

import (
	"fmt"
	"html"
	"io"
	"strings"
)

// Chart geometry, in SVG user units.
const (
	chartWidth = 1100
	labelWidth = 330
	barHeight  = 12
	rowGap     = 10
	panelTop   = 40
	valueRoom  = 340 // right of the longest bar, for its value and name
)

// WriteSVG draws every row whose Chart is "throughput" or "latency" as a
// pair of horizontal bars (vrouter, baseline), one panel per kind, each
// panel on its own linear scale. Nothing but the standard library: the
// SVG is written by hand.
func (r *Report) WriteSVG(w io.Writer) error {
	type bar struct {
		group, label      string
		subject, baseline *Figure
		unit              string
	}
	panels := []struct {
		kind, title string
		bars        []bar
	}{
		{"throughput", "Throughput and rates (higher is better)", nil},
		{"latency", "Latency (lower is better)", nil},
	}
	for _, s := range r.Scenarios {
		for i := range s.Rows {
			row := &s.Rows[i]
			for p := range panels {
				if row.Chart == panels[p].kind && (row.Subject.OK() || (row.Baseline != nil && row.Baseline.OK())) {
					panels[p].bars = append(panels[p].bars, bar{
						group:   fmt.Sprintf("%s. %s", s.ID, s.Title),
						label:   row.Metric,
						subject: &row.Subject, baseline: row.Baseline, unit: row.Unit,
					})
				}
			}
		}
	}

	var b strings.Builder
	y := 20
	body := func() {
		for _, p := range panels {
			fmt.Fprintf(&b, `<text x="10" y="%d" font-size="15" font-weight="bold">%s</text>`+"\n", y+panelTop-16, html.EscapeString(p.title))
			y += panelTop
			if len(p.bars) == 0 {
				fmt.Fprintf(&b, `<text x="10" y="%d" font-size="12">no figures</text>`+"\n", y+10)
				y += 30
				continue
			}
			// One scale per unit inside the panel: Gbit/s and q/s side by
			// side on one axis would flatten one of them.
			maxByUnit := map[string]float64{}
			for _, br := range p.bars {
				for _, f := range []*Figure{br.subject, br.baseline} {
					if f != nil && f.OK() && f.Value > maxByUnit[br.unit] {
						maxByUnit[br.unit] = f.Value
					}
				}
			}
			span := float64(chartWidth - labelWidth - valueRoom)
			group := ""
			for _, br := range p.bars {
				if br.group != group {
					group = br.group
					fmt.Fprintf(&b, `<text x="10" y="%d" font-size="12" font-weight="bold" fill="#2d3748">%s</text>`+"\n", y+10, html.EscapeString(group))
					y += 16
				}
				fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11" text-anchor="end">%s</text>`+"\n",
					labelWidth-8, y+barHeight, html.EscapeString(truncate(br.label, 52)))
				for k, f := range []*Figure{br.subject, br.baseline} {
					by := y + k*barHeight
					color, name := "#2b6cb0", "vrouter"
					if k == 1 {
						color = "#a0aec0"
					}
					if f == nil {
						continue
					}
					if k == 1 {
						name = f.Name
					}
					if !f.OK() {
						why := f.Skipped
						if why == "" {
							why = f.Error
						}
						fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="10" fill="#718096">%s: %s</text>`+"\n",
							labelWidth, by+barHeight-2, html.EscapeString(name), html.EscapeString(truncate(why, 70)))
						continue
					}
					wpx := 1.0
					if m := maxByUnit[br.unit]; m > 0 {
						wpx = max(1, f.Value/m*span)
					}
					fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", labelWidth, by, wpx, barHeight-1, color)
					fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="10">%s %s (%s)</text>`+"\n",
						float64(labelWidth)+wpx+4, by+barHeight-2, Num(f.Value), html.EscapeString(br.unit), html.EscapeString(name))
				}
				y += 2*barHeight + rowGap
			}
			y += 10
		}
	}
	body()
	height := y + 30
	var out strings.Builder
	fmt.Fprintf(&out, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif">`+"\n",
		chartWidth, height, chartWidth, height)
	fmt.Fprintf(&out, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&out, `<text x="10" y="16" font-size="12">%s</text>`+"\n",
		html.EscapeString(fmt.Sprintf("vrouter bench %s run %s: %s", r.Mode, r.Started.UTC().Format("2006-01-02 15:04Z"), r.Machine.Line())))
	out.WriteString(b.String())
	fmt.Fprintf(&out, `<text x="10" y="%d" font-size="10" fill="#4a5568">blue: vrouter; grey: baseline measured in the same run; each unit has its own linear scale</text>`+"\n", height-10)
	out.WriteString("</svg>\n")
	_, err := io.WriteString(w, out.String())
	return err
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
