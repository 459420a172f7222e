package bench

import (
	"fmt"
	"slices"
	"strings"

	"github.com/blockmover/blockmover/internal/units"
)

// This file is the report's one results model: the tables, facts, notes
// and warnings that Text, Markdown and HTML each write in their own
// syntax. Figures are computed here once, with their units; the renderers
// only lay them out.

// Tables returns the report's tables in the order every renderer writes
// them: the results, mover against each peer, the stages of each mover
// operation, the sweeps. With a baseline set, each figure of the results
// and the comparisons carries the baseline's median of it. Columns empty
// in every row are left out.
func (rep *Report) Tables() []Table {
	ts := rep.tables()
	if rep.Baseline != nil {
		old := map[string]Table{}
		for _, t := range rep.Baseline.tables() {
			old[t.ID] = t
		}
		for i := range ts {
			if o, ok := old[ts[i].ID]; ok && (o.ID == "results" || o.ID == "comparisons") {
				ts[i] = ts[i].withBaseline(o)
			}
		}
	}
	for i := range ts {
		ts[i] = ts[i].compact()
	}
	return ts
}

func (rep *Report) tables() []Table {
	ts := []Table{rep.resultsTable()}
	if len(rep.Comparisons) > 0 {
		ts = append(ts, rep.comparisonTable())
	}
	for _, r := range rep.Results {
		if r.Tool == "mover" && r.Variant == "" && len(r.Stages) > 0 {
			ts = append(ts, stageTable(r))
		}
	}
	for _, sw := range rep.Sweeps {
		ts = append(ts, rep.sweepTable(sw))
	}
	return ts
}

// row builds a row of n cells, the ones not given empty.
func row(key string, n int, cells ...Cell) Row {
	r := Row{Key: key, Cells: make([]Cell, n)}
	copy(r.Cells, cells)
	return r
}

var resultColumns = []Column{{"tool", true}, {"operation", true}, {"seconds", false}, {"spread", false}, {"MB/s", false},
	{"CPU s", false}, {"peak RSS", false}, {"read", false}, {"stored", false}, {"repository", false},
	{"read / changed", false}, {"stored / changed", false}, {"s as returned", false}}

// resultsTable has a row per result, and a row "n/a" per peer that cannot
// import incrementally.
func (rep *Report) resultsTable() Table {
	t := Table{ID: "results", Title: "Results", Columns: resultColumns}
	// Restores timed as returned and durable differ for peers only.
	peerRestores := slices.ContainsFunc(rep.Results, func(r Result) bool { return r.Tool != "mover" && !r.Op.isExport() })
	for _, r := range rep.Results {
		row := rep.resultRow(r)
		if !peerRestores {
			row.Cells[len(row.Cells)-1] = Cell{}
		}
		t.Rows = append(t.Rows, row)
	}
	var noInc []string
	for _, pe := range rep.Peers {
		if pe.Available && slices.Contains(rep.Ops, IncrementalImport) {
			t.Rows = append(t.Rows, row("", len(t.Columns), textCell(pe.Name), textCell(IncrementalImport.String()), textCell("n/a")))
			noInc = append(noInc, pe.Name)
		}
	}
	if len(noInc) > 0 {
		t.Notes = append(t.Notes, fmt.Sprintf("%s cannot restore incrementally onto a target that holds the base snapshot (n/a)", strings.Join(noInc, ", ")))
	}
	if rep.ChangedBytes > 0 && rep.has(IncrementalExport) {
		t.Notes = append(t.Notes, fmt.Sprintf("read / changed and stored / changed: bytes the incremental export read and stored per byte of the change (%s)", units.Bytes(rep.ChangedBytes)))
	}
	if peerRestores {
		t.Notes = append(t.Notes, "imports: seconds until the restored volume is durable (a peer's restore followed by an fdatasync); s as returned: until the tool returned (mover's import syncs before it returns)")
	}
	return t
}

// has reports whether any result is of the operation.
func (rep *Report) has(op Op) bool {
	return slices.ContainsFunc(rep.Results, func(r Result) bool { return r.Op == op })
}

// resultRow is one result's figures. Bytes read and stored come from the
// run with the median wall time.
func (rep *Report) resultRow(r Result) Row {
	var m Sample
	if len(r.Runs) > 0 {
		m = medianRun(r.Runs)
	}
	c := make([]Cell, len(resultColumns))
	c[0], c[1] = textCell(r.Name()), textCell(r.Op.String())
	c[2], c[4] = ranged(UnitSeconds, r.Seconds), ranged(UnitRate, r.MBps)
	if r.Seconds.Median > 0 && r.Seconds.Max > r.Seconds.Min {
		c[3] = figure(UnitPercent, (r.Seconds.Max-r.Seconds.Min)/r.Seconds.Median)
	}
	c[5], c[6] = figure(UnitCPU, r.CPU.Median), figure(UnitBytes, r.PeakRSS.Median)
	switch {
	case r.Op.isExport():
		if r.Tool == "mover" {
			c[7] = figure(UnitBytes, float64(m.ReadBytes))
		}
		c[8] = figure(UnitBytes, float64(m.StoredBytes))
		if r.RepoBytes.Median > 0 {
			c[9] = figure(UnitBytes, r.RepoBytes.Median)
		}
	case r.Tool == "mover":
		c[7] = figure(UnitBytes, float64(m.FetchedBytes))
		c[8] = figure(UnitBytes, float64(m.WrittenBytes))
		c[8].Text = "written"
	}
	if changed := float64(rep.ChangedBytes); r.Op == IncrementalExport && changed > 0 {
		if r.Tool == "mover" {
			c[10] = figure(UnitRatio, float64(m.ReadBytes)/changed)
		}
		c[11] = figure(UnitRatio, float64(m.StoredBytes)/changed)
	}
	if !r.Op.isExport() && r.Returned.Max > 0 {
		c[12] = ranged(UnitSeconds, r.Returned)
	}
	return Row{Key: r.Name() + " " + string(r.Op), Cells: c}
}

// comparisonTable: mover against each peer, ratios of the medians.
func (rep *Report) comparisonTable() Table {
	t := Table{ID: "comparisons", Title: "mover / peer (ratios of the medians)", Columns: []Column{{"mover / peer", true}, {"operation", true},
		{"throughput", false}, {"CPU seconds", false}, {"peak RSS", false}, {"repository size", false}}}
	for _, c := range rep.Comparisons {
		thr := figure(UnitRatio, c.Throughput)
		thr.Strong = true
		var repoC Cell
		if c.RepoBytes > 0 {
			repoC = figure(UnitRatio, c.RepoBytes)
		}
		t.Rows = append(t.Rows, Row{Key: c.Peer + " " + string(c.Op), Cells: []Cell{textCell("mover / " + c.Peer), textCell(c.Op.String()),
			thr, figure(UnitRatio, c.CPU), figure(UnitRatio, c.PeakRSS), repoC}})
	}
	return t
}

// stageTable breaks a mover operation down by pipeline stage.
func stageTable(r Result) Table {
	m := medianRun(r.Runs)
	t := Table{ID: "stages-" + string(r.Op),
		Title: fmt.Sprintf("mover %s per stage (pipeline %.2f s of %.2f s wall; stage seconds summed over workers)", r.Op, m.PipelineSeconds, m.Seconds),
		Columns: []Column{{"stage", true}, {"seconds", false}, {"workers", false}, {"busy", false}, {"MB/s of the stage", false},
			{"CPU s (est.)", false}, {"bytes in", false}}}
	for _, s := range r.Stages {
		name := textCell(s.Name)
		if s.Name == r.Bottleneck {
			name.Strong = true
			t.Notes = append(t.Notes, fmt.Sprintf("bottleneck: %s (its workers were busy %.0f%% of the pipeline's time)", s.Name, 100*s.Busy))
		}
		t.Rows = append(t.Rows, Row{Key: s.Name, Cells: []Cell{name, figure(UnitSeconds, s.Seconds), figure(UnitCount, float64(s.Workers)),
			figure(UnitPercent, s.Busy), figure(UnitRate, s.MBps), figure(UnitSeconds, s.CPUSeconds), figure(UnitBytes, float64(s.Bytes))}})
	}
	t.Notes = append(t.Notes, "busy is the share of the pipeline's time each worker spent in the stage; CPU seconds are the run's CPU time shared out by stage time (an estimate)")
	return t
}

// sweepTable: mover's throughput per value of a sweep, with its peak
// memory, repository size and what its incremental export stored.
func (rep *Report) sweepTable(sw Sweep) Table {
	t := Table{ID: "sweep-" + sw.Key, Title: fmt.Sprintf("sweep %s (mover MB/s, median and range)", sw.Key), Columns: []Column{{"value", true}}}
	for _, op := range rep.Ops {
		t.Columns = append(t.Columns, Column{Name: op.String()})
	}
	t.Columns = append(t.Columns, Column{Name: "peak RSS"}, Column{Name: "repository"}, Column{Name: "incremental stored"})
	for _, v := range sw.Values {
		variant := sw.Key + "=" + v
		cells := []Cell{textCell(v)}
		var rss float64
		for _, op := range rep.Ops {
			r, ok := rep.Find("mover", variant, op)
			if !ok {
				cells = append(cells, Cell{})
				continue
			}
			cells = append(cells, ranged(UnitRate, r.MBps))
			rss = max(rss, r.PeakRSS.Median)
		}
		var repoC, inc Cell
		if r, ok := rep.Find("mover", variant, FullExport); ok {
			repoC = figure(UnitBytes, r.RepoBytes.Median)
		}
		if r, ok := rep.Find("mover", variant, IncrementalExport); ok && len(r.Runs) > 0 {
			inc = figure(UnitBytes, float64(medianRun(r.Runs).StoredBytes))
		}
		cells = append(cells, figure(UnitBytes, rss), repoC, inc)
		t.Rows = append(t.Rows, Row{Key: variant, Cells: cells})
	}
	return t
}

// Fact is one line about how and where the benchmark ran: a name and its
// value (no name: a sentence of its own). Code values are a command.
type Fact struct {
	Name, Value string
	Code        bool
}

// Facts returns how and where the benchmark ran, as every renderer lists
// it.
func (rep *Report) Facts() []Fact {
	f := []Fact{
		{Name: "change", Value: fmt.Sprintf("%s (%s in %d extents)", rep.ChangeText, units.Bytes(rep.ChangedBytes), rep.ChangeExtents)},
		{Name: "machine", Value: fmt.Sprintf("%s; load average %.2f before, %.2f after", rep.Machine, rep.Machine.LoadBefore, rep.Machine.LoadAfter)},
		{Name: "source", Value: rep.Setup.Source},
		{Name: "repositories", Value: fmt.Sprintf("%s (%s), a fresh one per run", rep.Setup.Repo, rep.Setup.RepoFS)},
		{Name: "import target", Value: rep.Setup.Target},
		{Value: rep.runsLine()},
	}
	if l := rep.peerLine(); l != "" {
		f = append(f, Fact{Value: l})
	}
	for _, pe := range rep.Peers {
		if pe.Available {
			f = append(f, Fact{Name: "peer", Value: pe.Version + noteSuffix(pe.Note)})
		} else {
			f = append(f, Fact{Name: "peer " + pe.Name, Value: pe.Note})
		}
	}
	if rep.Command != "" {
		f = append(f, Fact{Name: "command", Value: rep.Command, Code: true})
	}
	f = append(f, Fact{Name: "started", Value: fmt.Sprintf("%s, took %.0f s", rep.Started.Format("2006-01-02 15:04 MST"), rep.Seconds)})
	if b := rep.Baseline; b != nil {
		f = append(f, Fact{Name: "baseline", Value: fmt.Sprintf("the run of %s (mover %s): figures show \"was\" its median and the change", b.Started.Format("2006-01-02 15:04 MST"), b.Machine.Mover)})
	}
	return f
}

// Warnings returns what makes the figures doubtful, for every renderer to
// show first.
func (rep *Report) Warnings() []string {
	var w []string
	if rep.LoadWarning != "" {
		w = append(w, rep.LoadWarning)
	}
	return w
}

// RawLines describes the storage's raw sequential speed and sets mover
// against it (none without a raw measurement).
func (rep *Report) RawLines() []string {
	raw := rep.Raw
	if raw == nil {
		return nil
	}
	s := fmt.Sprintf("raw sequential speed of %s (%s, O_DIRECT, %s I/Os):", raw.Path, raw.Kind, units.Bytes(int64(raw.BlockSize)))
	if raw.Note != "" {
		s += " " + raw.Note
	}
	var parts []string
	for _, pt := range raw.Points {
		parts = append(parts, fmt.Sprintf("%s QD%d %.0f MB/s", pt.Mode, pt.QueueDepth, pt.MBps))
	}
	if len(parts) > 0 {
		s += " " + strings.Join(parts, ", ")
	}
	lines := []string{s}
	if line := rep.rawShare(); line != "" {
		lines = append(lines, line)
	}
	return lines
}

// capital starts s with a capital letter.
func capital(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
