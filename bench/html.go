package bench

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"

	"github.com/blockmover/blockmover/internal/units"
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
// and, over several runs, the range.
type ChartPoint struct {
	Label    string
	Series   string
	Value    float64
	Min, Max float64
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
					c.Points = append(c.Points, ChartPoint{Label: fmt.Sprintf("%s · %s", op, r.Tool), Series: r.Tool, Value: v.Median, Min: v.Min, Max: v.Max})
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

// svg draws a chart as a horizontal bar chart: one rect of class "mark"
// per data point, with its range as a whisker when runs differed.
func (c Chart) svg() string {
	const width, labelW, rowH, top, valueW = 820, 300, 24, 8, 110
	barMax := float64(width - labelW - valueW)
	maxV, minV := 0.0, 0.0
	for _, p := range c.Points {
		maxV = max(maxV, p.Value, p.Max)
		if v := min(p.Value, p.Min); v > 0 && (minV == 0 || v < minV) {
			minV = v
		}
	}
	if maxV <= 0 {
		maxV = 1
	}
	// pos maps a value to a bar length.
	pos := func(v float64) float64 { return max(0, v) / maxV * barMax }
	if c.Log && minV > 0 {
		base := math.Pow(10, math.Floor(math.Log10(minV))-0.3)
		span := math.Log10(maxV / base)
		pos = func(v float64) float64 {
			if v <= base {
				return 0
			}
			return math.Log10(v/base) / span * barMax
		}
	}
	palette := [...]string{"#3b6fb6", "#d9822b", "#3a9b5c", "#b8415a", "#7d5ba6", "#8c6d46", "#4b9fb1", "#999933"}
	colors := map[string]string{}
	height := top*2 + rowH*len(c.Points)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" id="%s" data-points="%d" width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="%s">`,
		html.EscapeString(c.ID), len(c.Points), width, height, width, height, html.EscapeString(c.Title))
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#888"/>`, labelW, top, labelW, height-top)
	for i, p := range c.Points {
		col, ok := colors[p.Series]
		if !ok {
			col = palette[len(colors)%len(palette)]
			colors[p.Series] = col
		}
		y := top + i*rowH
		w := pos(p.Value)
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end" class="label">%s</text>`, labelW-8, y+16, html.EscapeString(p.Label))
		fmt.Fprintf(&b, `<rect class="mark" data-label="%s" data-value="%g" x="%d" y="%d" width="%.1f" height="16" fill="%s"><title>%s: %s %s</title></rect>`,
			html.EscapeString(p.Label), p.Value, labelW, y+4, max(w, 0.5), col, html.EscapeString(p.Label), num(p.Value), html.EscapeString(c.Unit))
		if p.Max > p.Min {
			x1, x2 := float64(labelW)+pos(p.Min), float64(labelW)+pos(p.Max)
			fmt.Fprintf(&b, `<line class="whisker" x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#222"/>`, x1, y+12, x2, y+12)
			for _, x := range []float64{x1, x2} {
				fmt.Fprintf(&b, `<line class="whisker" x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#222"/>`, x, y+8, x, y+16)
			}
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" class="value">%s %s</text>`, float64(labelW)+max(w, pos(p.Max))+6, y+16, num(p.Value), html.EscapeString(c.Unit))
	}
	b.WriteString(`</svg>`)
	return b.String()
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

const pageStyle = `body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.2em .7em;border-bottom:1px solid #eee;text-align:right}
td:first-child,th:first-child,td.l{text-align:left}th{background:#f4f4f4}
figure{margin:1.2em 0}figcaption{font-weight:600;margin-bottom:.3em}
svg .label,svg .value{font:12px system-ui,sans-serif;fill:#222}.note{color:#555}code{background:#f4f4f4;padding:0 .2em}`

// HTML writes the report as one self-contained page: tables and SVG
// charts, no scripts, no external resources, viewable offline.
func (rep *Report) HTML(w io.Writer) error {
	var b strings.Builder
	e := html.EscapeString
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>mover bench: %s</title><style>%s</style></head><body>\n", e(rep.Scenario.Name), pageStyle)
	p("<h1>mover bench: %s</h1>\n", e(rep.ScenarioText))
	p("<p>Change: %s (%s in %d extents).</p>\n", e(rep.ChangeText), e(units.Bytes(rep.ChangedBytes)), rep.ChangeExtents)
	p("<ul><li>Machine: %s; load %.2f before, %.2f after</li>", e(rep.Machine.String()), rep.Machine.LoadBefore, rep.Machine.LoadAfter)
	p("<li>Source: %s</li><li>Repositories: %s (%s), a fresh one per run</li><li>Import target: %s</li><li>%s</li>",
		e(rep.Setup.Source), e(rep.Setup.Repo), e(rep.Setup.RepoFS), e(rep.Setup.Target), e(rep.runsLine()))
	if l := rep.peerLine(); l != "" {
		p("<li>%s</li>", e(strings.ToUpper(l[:1])+l[1:]))
	}
	for _, pe := range rep.Peers {
		if pe.Available {
			p("<li>Peer: %s%s</li>", e(pe.Version), e(noteSuffix(pe.Note)))
		} else {
			p("<li>Peer %s: %s</li>", e(pe.Name), e(pe.Note))
		}
	}
	if rep.Command != "" {
		p("<li>Command: <code>%s</code></li>", e(rep.Command))
	}
	p("<li>Started %s, took %.0f s</li></ul>\n", rep.Started.Format("2006-01-02 15:04 MST"), rep.Seconds)

	p("<h2>Results</h2>\n<table><tr><th>tool</th><th>operation</th><th>seconds</th><th>MB/s</th><th>CPU s</th><th>peak RSS</th><th>stored</th><th>repository</th></tr>\n")
	for _, r := range rep.Results {
		m := medianRun(r.Runs)
		stored, repoS := "", ""
		if r.Op.isExport() {
			stored = units.Bytes(m.StoredBytes)
			if r.RepoBytes.Median > 0 {
				repoS = units.Bytes(int64(r.RepoBytes.Median))
			}
		} else if r.Tool == "mover" {
			stored = units.Bytes(m.WrittenBytes) + " written"
		}
		p("<tr><td>%s</td><td class=\"l\">%s</td><td>%s</td><td>%s</td><td>%.1f</td><td>%s</td><td>%s</td><td>%s</td></tr>\n", e(r.Name()), e(r.Op.String()),
			e(statText(r.Seconds, "%.2f")), e(statText(r.MBps, "%.0f")), r.CPU.Median, e(units.Bytes(int64(r.PeakRSS.Median))), e(stored), e(repoS))
	}
	p("</table>\n")
	if len(rep.Comparisons) > 0 {
		p("<table><tr><th>mover / peer</th><th>operation</th><th>throughput</th><th>CPU seconds</th><th>peak RSS</th><th>repository size</th></tr>\n")
		for _, c := range rep.Comparisons {
			repoS := ""
			if c.RepoBytes > 0 {
				repoS = fmt.Sprintf("%.2f×", c.RepoBytes)
			}
			p("<tr><td>mover / %s</td><td class=\"l\">%s</td><td><b>%.2f×</b></td><td>%.2f×</td><td>%.2f×</td><td>%s</td></tr>\n", e(c.Peer), e(c.Op.String()), c.Throughput, c.CPU, c.PeakRSS, repoS)
		}
		p("</table>\n")
	}
	for _, r := range rep.Results {
		if r.Tool != "mover" || r.Variant != "" || len(r.Stages) == 0 {
			continue
		}
		p("<h2>mover %s: stages</h2>\n<table><tr><th>stage</th><th>seconds</th><th>workers</th><th>busy</th><th>MB/s of the stage</th><th>CPU s (est.)</th><th>bytes in</th></tr>\n", e(r.Op.String()))
		for _, s := range r.Stages {
			name := s.Name
			if s.Name == r.Bottleneck {
				name = "<b>" + e(name) + " (bottleneck)</b>"
			} else {
				name = e(name)
			}
			p("<tr><td>%s</td><td>%.2f</td><td>%d</td><td>%.0f%%</td><td>%s</td><td>%.2f</td><td>%s</td></tr>\n", name, s.Seconds, s.Workers, 100*s.Busy, rateText(s.MBps), s.CPUSeconds, e(units.Bytes(s.Bytes)))
		}
		p("</table>\n<p class=\"note\">Stage seconds are summed over the stage's workers; busy is the share of the pipeline's time each worker spent in the stage. CPU seconds are the run's CPU time shared out by stage time (an estimate).</p>\n")
	}
	p("<h2>Charts</h2>\n")
	for _, c := range rep.Charts() {
		p("<figure><figcaption>%s</figcaption>\n%s\n</figure>\n", e(c.Title), c.svg())
	}
	if raw := rep.Raw; raw != nil && raw.Note != "" {
		p("<p class=\"note\">Raw speed of %s: %s</p>\n", e(raw.Path), e(raw.Note))
	}
	if line := rep.rawShare(); line != "" {
		p("<p class=\"note\">%s.</p>\n", e(line))
	}
	p("</body></html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}
