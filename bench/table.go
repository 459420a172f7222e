package bench

import (
	"fmt"
	"math"
	"slices"

	"github.com/blockmover/blockmover/internal/units"
)

// Unit says how a cell's figure is written. Every renderer (text,
// Markdown, HTML) writes a figure through its unit, so the three agree.
type Unit uint8

// Units of table cells.
const (
	UnitText    Unit = iota // no figure: the cell is its Text
	UnitSeconds             // seconds, two decimals
	UnitCPU                 // CPU seconds, one decimal
	UnitRate                // MB/s, no decimals; "-" for 0
	UnitBytes               // bytes, in binary units
	UnitRatio               // a ratio: "2.50×"
	UnitPercent             // a fraction written as a percentage
	UnitCount               // a whole number
)

// Format writes one figure in the unit.
func (u Unit) Format(v float64) string {
	switch u {
	case UnitSeconds:
		return fmt.Sprintf("%.2f", v)
	case UnitCPU:
		return fmt.Sprintf("%.1f", v)
	case UnitRate:
		return rateText(v)
	case UnitBytes:
		return units.Bytes(int64(v))
	case UnitRatio:
		return fmt.Sprintf("%.2f×", v)
	case UnitPercent:
		return fmt.Sprintf("%.0f%%", 100*v)
	case UnitCount:
		return fmt.Sprintf("%.0f", v)
	}
	return ""
}

// Cell is one entry of a table: words, or a figure over the runs (its
// median and range) in a unit, with an earlier run's median beside it when
// a baseline is set.
type Cell struct {
	// Text is the cell without a figure; with one, words written after it
	// (e.g. "written").
	Text  string
	Unit  Unit
	Value Stat
	// Base is the baseline's median of the same figure (HasBase).
	Base    float64
	HasBase bool
	// Strong cells are the headline figures (bold where the format can).
	Strong bool
}

// textCell is a cell of words.
func textCell(s string) Cell { return Cell{Text: s} }

// figure is a cell of one figure (no range).
func figure(u Unit, v float64) Cell { return Cell{Unit: u, Value: Stat{v, v, v}} }

// ranged is a cell of a figure over the runs, written with its range.
func ranged(u Unit, s Stat) Cell { return Cell{Unit: u, Value: s} }

// IsFigure reports whether the cell holds a figure.
func (c Cell) IsFigure() bool { return c.Unit != UnitText }

// Empty reports whether the cell shows nothing.
func (c Cell) Empty() bool { return !c.IsFigure() && c.Text == "" }

// String writes the cell: "5.60 (5.50–5.70)", with ", was 7.00 (−20%)"
// (or ", unchanged" when both read the same) after it when a baseline is
// set.
func (c Cell) String() string {
	if !c.IsFigure() {
		return c.Text
	}
	s := c.Unit.Format(c.Value.Median)
	if c.Value.Min != c.Value.Max {
		s += " (" + c.Unit.Format(c.Value.Min) + "–" + c.Unit.Format(c.Value.Max) + ")"
	}
	if c.Text != "" {
		s += " " + c.Text
	}
	if c.HasBase {
		if was := c.Unit.Format(c.Base); was == c.Unit.Format(c.Value.Median) {
			s += ", unchanged"
		} else {
			s += ", was " + was + " (" + change(c.Value.Median, c.Base) + ")"
		}
	}
	return s
}

// change is the change from old to v in percent: "+12%", "−20%", "±0%".
func change(v, old float64) string {
	if old == 0 {
		if v == 0 {
			return "±0%"
		}
		return "new"
	}
	p := 100 * (v - old) / old
	switch {
	case math.Abs(p) < 0.5:
		return "±0%"
	case p > 0:
		return fmt.Sprintf("+%.0f%%", p)
	}
	return fmt.Sprintf("−%.0f%%", -p)
}

// Column is a table's column: its heading, and whether it is words
// (aligned left) rather than figures.
type Column struct {
	Name string
	Left bool
}

// Row is one line of a table. Key names it across runs (tool, variant and
// operation, or a stage), so that a baseline's row can be found.
type Row struct {
	Key   string
	Cells []Cell
}

// Table is one table of a report, as every renderer writes it: a title,
// columns, rows and notes (sentences after the table).
type Table struct {
	ID      string
	Title   string
	Columns []Column
	Rows    []Row
	Notes   []string
}

// compact drops the columns that are empty in every row.
func (t Table) compact() Table {
	keep := make([]bool, len(t.Columns))
	for _, r := range t.Rows {
		for i, c := range r.Cells {
			if i < len(keep) && !c.Empty() {
				keep[i] = true
			}
		}
	}
	out := Table{ID: t.ID, Title: t.Title, Notes: t.Notes}
	for i, col := range t.Columns {
		if keep[i] {
			out.Columns = append(out.Columns, col)
		}
	}
	for _, r := range t.Rows {
		row := Row{Key: r.Key}
		for i, c := range r.Cells {
			if i < len(keep) && keep[i] {
				row.Cells = append(row.Cells, c)
			}
		}
		out.Rows = append(out.Rows, row)
	}
	return out
}

// withBaseline sets, in each figure of t, the median of the same figure
// (same row key, same column) in old. Percentages and counts are left
// alone: a change in percent of a percentage reads as nonsense.
func (t Table) withBaseline(old Table) Table {
	col := map[string]int{}
	for i, c := range old.Columns {
		col[c.Name] = i
	}
	for _, r := range t.Rows {
		i := slices.IndexFunc(old.Rows, func(o Row) bool { return o.Key == r.Key })
		if i < 0 || r.Key == "" {
			continue
		}
		for j := range r.Cells {
			k, ok := col[t.Columns[j].Name]
			if !ok || k >= len(old.Rows[i].Cells) {
				continue
			}
			if c, o := &r.Cells[j], old.Rows[i].Cells[k]; c.IsFigure() && c.Unit == o.Unit && c.Unit != UnitPercent && c.Unit != UnitCount {
				c.Base, c.HasBase = o.Value.Median, true
			}
		}
	}
	return t
}
