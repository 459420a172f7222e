package bench

import (
	"fmt"
	"html"
	"io"
	"slices"
	"strings"
)

// Chart is one chart of a report: a bar per data point.
type Chart struct {
	ID     string
	Title  string
	Unit   string
	Points []ChartPoint
	// Log draws bar lengths on a logarithmic scale (for values that span
	// orders of magnitude, like stage rates).
	Log bool
}

// ChartPoint is one bar: its label, series (which picks the colour), value
// and, over several runs, the range; with a baseline, the earlier run's
// value (drawn as a dashed line across the bar).
type ChartPoint struct {
	Label    string
	Series   string
	Value    float64
	Min, Max float64
	Base     float64
	HasBase  bool
}

// Charts returns the charts of the report: throughput per stage of each
// mover operation, throughput, CPU time and peak memory per tool and
// operation, throughput per value of each sweep, and the storage's raw
// speed.
func (rep *Report) Charts() []Chart {
	var charts []Chart
	for _, r := range rep.Results {
		if r.Tool != "mover" || r.Variant != "" || len(r.Stages) == 0 {
			continue
		}
		c := Chart{ID: "stages-" + string(r.Op), Title: fmt.Sprintf("mover %s: throughput of each stage with its workers (log scale)", r.Op), Unit: "MB/s", Log: true}
		for _, s := range r.Stages {
			if s.MBps <= 0 {
				continue
			}
			label := s.Name
			if s.Name == r.Bottleneck {
				label += " ← bottleneck"
			}
			c.Points = append(c.Points, ChartPoint{Label: label, Series: s.Name, Value: s.MBps, Min: s.MBps, Max: s.MBps})
		}
		if len(c.Points) > 0 {
			charts = append(charts, c)
		}
	}
	perTool := []struct {
		id, title, unit string
		val             func(Result) Stat
	}{
		{"tools-throughput", "Throughput per tool (volume size / wall time)", "MB/s", func(r Result) Stat { return r.MBps }},
		{"tools-cpu", "CPU seconds per tool (user + system)", "CPU s", func(r Result) Stat { return r.CPU }},
		{"tools-rss", "Peak memory per tool (resident set)", "MiB", func(r Result) Stat {
			s := r.PeakRSS
			return Stat{s.Median / (1 << 20), s.Min / (1 << 20), s.Max / (1 << 20)}
		}},
	}
	for _, pt := range perTool {
		c := Chart{ID: pt.id, Title: pt.title, Unit: pt.unit}
		for _, op := range rep.Ops {
			for _, r := range rep.Results {
				if r.Variant == "" && r.Op == op {
					v := pt.val(r)
					p := ChartPoint{Label: fmt.Sprintf("%s · %s", op, r.Tool), Series: r.Tool, Value: v.Median, Min: v.Min, Max: v.Max}
					if rep.Baseline != nil {
						if old, ok := rep.Baseline.Find(r.Tool, "", op); ok {
							p.Base, p.HasBase = pt.val(old).Median, true
						}
					}
					c.Points = append(c.Points, p)
				}
			}
		}
		if len(c.Points) > 0 {
			charts = append(charts, c)
		}
	}
	for _, sw := range rep.Sweeps {
		c := Chart{ID: "sweep-" + sw.Key, Title: fmt.Sprintf("Sweep %s: mover throughput per value", sw.Key), Unit: "MB/s"}
		for _, op := range rep.Ops {
			for _, v := range sw.Values {
				if r, ok := rep.Find("mover", sw.Key+"="+v, op); ok {
					c.Points = append(c.Points, ChartPoint{Label: fmt.Sprintf("%s · %s=%s", op, sw.Key, v), Series: string(op), Value: r.MBps.Median, Min: r.MBps.Min, Max: r.MBps.Max})
				}
			}
		}
		if len(c.Points) > 0 {
			charts = append(charts, c)
		}
	}
	if rep.Raw != nil && len(rep.Raw.Points) > 0 {
		c := Chart{ID: "raw", Title: fmt.Sprintf("Raw sequential speed of %s (%s, O_DIRECT)", rep.Raw.Path, rep.Raw.Kind), Unit: "MB/s"}
		for _, p := range rep.Raw.Points {
			c.Points = append(c.Points, ChartPoint{Label: fmt.Sprintf("%s QD%d", p.Mode, p.QueueDepth), Series: p.Mode, Value: p.MBps, Min: p.MBps, Max: p.MBps})
		}
		charts = append(charts, c)
	}
	return charts
}

// A chart's layout in pixels: its width, the labels' column, a row per
// point, the margin above, room for the values right of the bars, and for
// the value axis below them.
const (
	chartWidth  = 820
	chartLabelW = 300
	chartRowH   = 24
	chartTop    = 8
	chartValueW = 110
	chartAxisH  = 40
)

// svg draws a chart as a horizontal bar chart: one rect of class "mark"
// per data point, with its range as a whisker when runs differed, over a
// value axis (class "axis x-axis": a line, labelled ticks and the unit)
// with a gridline (class "gridline") at each tick, and the labels on a
// category axis (class "axis y-axis").
func (c Chart) svg() string {
	valueW := chartValueW
	if slices.ContainsFunc(c.Points, func(p ChartPoint) bool { return p.HasBase }) {
		valueW *= 2 // room for ", was …"
	}
	barMax := float64(chartWidth - chartLabelW - valueW)
	maxV, minV := 0.0, 0.0
	for _, p := range c.Points {
		maxV = max(maxV, p.Value, p.Max, p.Base)
		if v := min(p.Value, p.Min); v > 0 && (minV == 0 || v < minV) {
			minV = v
		}
	}
	ax := newAxis(minV, maxV, c.Log)
	pos := func(v float64) float64 { return ax.pos(v, barMax) }
	plotH := chartRowH * len(c.Points)
	height := chartTop + plotH + chartAxisH
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" id="%s" data-points="%d" width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="%s">`,
		html.EscapeString(c.ID), len(c.Points), chartWidth, height, chartWidth, height, html.EscapeString(c.Title))
	c.axes(&b, ax, barMax, plotH)
	palette := [...]string{"#3b6fb6", "#d9822b", "#3a9b5c", "#b8415a", "#7d5ba6", "#8c6d46", "#4b9fb1", "#999933"}
	colors := map[string]string{}
	for i, p := range c.Points {
		col, ok := colors[p.Series]
		if !ok {
			col = palette[len(colors)%len(palette)]
			colors[p.Series] = col
		}
		y := chartTop + i*chartRowH
		w := pos(p.Value)
		fmt.Fprintf(&b, `<rect class="mark" data-label="%s" data-value="%g" x="%d" y="%d" width="%.1f" height="16" fill="%s"><title>%s: %s %s</title></rect>`,
			html.EscapeString(p.Label), p.Value, chartLabelW, y+4, max(w, 0.5), col, html.EscapeString(p.Label), num(p.Value), html.EscapeString(c.Unit))
		if p.Max > p.Min {
			x1, x2 := float64(chartLabelW)+pos(p.Min), float64(chartLabelW)+pos(p.Max)
			fmt.Fprintf(&b, `<line class="whisker" x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#222"/>`, x1, y+12, x2, y+12)
			for _, x := range []float64{x1, x2} {
				fmt.Fprintf(&b, `<line class="whisker" x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#222"/>`, x, y+8, x, y+16)
			}
		}
		value := num(p.Value) + " " + c.Unit
		right := max(w, pos(p.Max))
		if p.HasBase {
			x := float64(chartLabelW) + pos(p.Base)
			fmt.Fprintf(&b, `<line class="baseline" x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#000" stroke-width="2" stroke-dasharray="3,2"><title>was %s %s</title></line>`,
				x, y+1, x, y+23, num(p.Base), html.EscapeString(c.Unit))
			if num(p.Base) == num(p.Value) {
				value += ", unchanged"
			} else {
				value += ", was " + num(p.Base) + " (" + change(p.Value, p.Base) + ")"
			}
			right = max(right, pos(p.Base))
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" class="value">%s</text>`, float64(chartLabelW)+right+6, y+16, html.EscapeString(value))
	}
	b.WriteString(`</svg>`)
	return b.String()
}

// axes draws the gridlines, the value axis under the bars and the
// category axis with the points' labels.
func (c Chart) axes(b *strings.Builder, ax axis, barMax float64, plotH int) {
	bottom := chartTop + plotH
	b.WriteString(`<g class="grid">`)
	for _, t := range ax.ticks {
		x := float64(chartLabelW) + ax.pos(t, barMax)
		fmt.Fprintf(b, `<line class="gridline" data-value="%g" x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`, t, x, chartTop, x, bottom)
	}
	b.WriteString(`</g><g class="axis x-axis">`)
	fmt.Fprintf(b, `<line class="axis-line" x1="%d" y1="%d" x2="%.1f" y2="%d" stroke="#888"/>`, chartLabelW, bottom, float64(chartLabelW)+barMax, bottom)
	for _, t := range ax.ticks {
		x := float64(chartLabelW) + ax.pos(t, barMax)
		fmt.Fprintf(b, `<line class="tick" x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#888"/>`, x, bottom, x, bottom+4)
		fmt.Fprintf(b, `<text class="tick-label" x="%.1f" y="%d" text-anchor="middle">%s</text>`, x, bottom+16, ax.label(t))
	}
	unit := c.Unit
	if ax.log {
		unit += " (log scale)"
	}
	fmt.Fprintf(b, `<text class="axis-title" x="%.1f" y="%d" text-anchor="middle">%s</text>`, float64(chartLabelW)+barMax/2, bottom+32, html.EscapeString(unit))
	b.WriteString(`</g><g class="axis y-axis">`)
	fmt.Fprintf(b, `<line class="axis-line" x1="%d" y1="%d" x2="%d" y2="%d" stroke="#888"/>`, chartLabelW, chartTop, chartLabelW, bottom)
	for i, p := range c.Points {
		fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="end" class="label">%s</text>`, chartLabelW-8, chartTop+i*chartRowH+16, html.EscapeString(p.Label))
	}
	b.WriteString(`</g>`)
}

// num formats a chart value with a sensible precision.
func num(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

const pageStyle = `body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0;font-size:13px}td,th{padding:.2em .7em;border-bottom:1px solid #eee;text-align:right}
td{white-space:nowrap}td:first-child,th:first-child,td.l,th.l{text-align:left}.scroll{overflow-x:auto}th{background:#f4f4f4}
figure{margin:1.2em 0}figcaption{font-weight:600;margin-bottom:.3em}
svg .label,svg .value,svg .tick-label,svg .axis-title{font:12px system-ui,sans-serif;fill:#222}.note{color:#555}code{background:#f4f4f4;padding:0 .2em}
.warning{background:#fde2e1;border:2px solid #c0392b;color:#7a1d14;padding:.6em 1em;font-weight:600}`

// HTML writes the report as one self-contained page: warnings, facts,
// the tables (Tables) and SVG charts, no scripts, no external resources,
// viewable offline.
func (rep *Report) HTML(w io.Writer) error {
	var b strings.Builder
	e := html.EscapeString
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>mover bench: %s</title><style>%s</style></head><body>\n", e(rep.Scenario.Name), pageStyle)
	p("<h1>mover bench: %s</h1>\n", e(rep.ScenarioText))
	for _, w := range rep.Warnings() {
		p("<p class=\"warning\" role=\"alert\">Warning: %s.</p>\n", e(w))
	}
	p("<ul>")
	for _, f := range rep.Facts() {
		v := e(f.Value)
		if f.Code {
			v = "<code>" + v + "</code>"
		}
		if f.Name == "" {
			p("<li>%s</li>", capital(v))
		} else {
			p("<li>%s: %s</li>", e(capital(f.Name)), v)
		}
	}
	p("</ul>\n")
	for _, t := range rep.Tables() {
		htmlTable(&b, t)
	}
	p("<h2>Charts</h2>\n")
	for _, c := range rep.Charts() {
		p("<figure><figcaption>%s</figcaption>\n%s\n</figure>\n", e(c.Title), c.svg())
	}
	for _, l := range rep.RawLines() {
		p("<p class=\"note\">%s.</p>\n", e(capital(l)))
	}
	p("</body></html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// htmlTable writes a table under its title, with its notes after it.
func htmlTable(b *strings.Builder, t Table) {
	e := html.EscapeString
	fmt.Fprintf(b, "<h2>%s</h2>\n<div class=\"scroll\"><table id=\"%s\"><tr>", e(t.Title), e(t.ID))
	for _, c := range t.Columns {
		if c.Left {
			fmt.Fprintf(b, "<th class=\"l\">%s</th>", e(c.Name))
		} else {
			fmt.Fprintf(b, "<th>%s</th>", e(c.Name))
		}
	}
	b.WriteString("</tr>\n")
	for _, r := range t.Rows {
		b.WriteString("<tr>")
		for i, c := range r.Cells {
			s := e(c.String())
			if c.Strong && s != "" {
				s = "<b>" + s + "</b>"
			}
			if i > 0 && t.Columns[i].Left {
				fmt.Fprintf(b, "<td class=\"l\">%s</td>", s)
			} else {
				fmt.Fprintf(b, "<td>%s</td>", s)
			}
		}
		b.WriteString("</tr>\n")
	}
	b.WriteString("</table></div>\n")
	for _, n := range t.Notes {
		fmt.Fprintf(b, "<p class=\"note\">%s.</p>\n", e(n))
	}
}
