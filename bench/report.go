package bench

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// ReportVersion is the version of the Report's JSON shape.
const ReportVersion = 1

// Report is everything a benchmark measured, as printed, written as JSON
// (--json) and drawn (--html).
type Report struct {
	Version int       `json:"version"`
	Started time.Time `json:"started"`
	Seconds float64   `json:"seconds"`
	Command string    `json:"command,omitempty"`
	Machine Machine   `json:"machine"`

	Scenario      Scenario         `json:"scenario"`
	ScenarioText  string           `json:"scenario_text"`
	ChangeText    string           `json:"change_text"`
	ChangedBytes  int64            `json:"changed_bytes"`
	ChangeExtents int              `json:"change_extents"`
	ClassBytes    map[string]int64 `json:"class_bytes"`

	Setup    Setup    `json:"setup"`
	Ops      []Op     `json:"ops"`
	Settings Settings `json:"settings"`
	Sweeps   []Sweep  `json:"sweeps,omitempty"`
	Peers    []Peer   `json:"peers,omitempty"`
	// Raw is the storage's raw sequential speed.
	Raw *RawReport `json:"raw,omitempty"`

	Results     []Result     `json:"results"`
	Comparisons []Comparison `json:"comparisons,omitempty"`

	// LoadWarning says the machine was busy before the run (its load
	// average above LoadPerCore per core); empty on a quiet machine.
	LoadWarning string `json:"load_warning,omitempty"`
	// Baseline is an earlier run the figures are set against (--baseline);
	// its own baseline is dropped.
	Baseline *Report `json:"baseline,omitempty"`
}

// LoadPerCore is the load average per core above which a run is reported
// as made on a busy machine.
const LoadPerCore = 0.5

// SetBaseline sets the earlier run each figure is shown beside.
func (rep *Report) SetBaseline(old *Report) {
	if old != nil {
		o := *old
		o.Baseline = nil
		old = &o
	}
	rep.Baseline = old
}

// ErrReport: a file given as an earlier report is not one this mover
// reads.
var ErrReport = errors.New("not a mover bench report")

// ReadReport reads a report written as JSON (mover bench --json), to be
// an earlier run set beside a new one (SetBaseline).
func ReadReport(r io.Reader) (*Report, error) {
	var rep Report
	if err := json.NewDecoder(r).Decode(&rep); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrReport, err)
	}
	if rep.Version != ReportVersion || len(rep.Results) == 0 {
		return nil, fmt.Errorf("%w: version %d with %d results (want version %d with results)", ErrReport, rep.Version, len(rep.Results), ReportVersion)
	}
	return &rep, nil
}

// loadWarning is the warning for a load average before the run on cpus
// cores, or "".
func loadWarning(load float64, cpus int) string {
	if cpus <= 0 || load <= LoadPerCore*float64(cpus) {
		return ""
	}
	return fmt.Sprintf("the machine was busy before the run: load average %.2f on %d cores (above %.1f per core); the figures may not compare", load, cpus, LoadPerCore)
}

// Setup is where and how the runs ran.
type Setup struct {
	Source string `json:"source"`
	Target string `json:"target"`
	Repo   string `json:"repo"`
	RepoFS string `json:"repo_fs"`
	Runs   int    `json:"runs"`
	// Child: every run was a process of its own (honest CPU and memory
	// per run); otherwise runs shared this process.
	Child  bool `json:"child"`
	Verify bool `json:"verify"`
}

// Result is one operation of one tool (or mover variant) over the runs.
type Result struct {
	Tool    string `json:"tool"`
	Variant string `json:"variant,omitempty"`
	Op      Op     `json:"op"`
	Size    int64  `json:"size"`
	Seconds Stat   `json:"seconds"`
	// MBps is the volume's size in 10^6 bytes per wall second.
	MBps      Stat `json:"mb_per_s"`
	CPU       Stat `json:"cpu_seconds"`
	PeakRSS   Stat `json:"peak_rss"`
	RepoBytes Stat `json:"repo_bytes"`
	// Stages of mover's pipeline, from the runs' medians; the bottleneck
	// is the stage whose workers were busy longest.
	// Returned is the wall time of an import until the tool returned,
	// before the sync that Seconds includes for peers (mover's import
	// syncs before it returns, so there the two are equal).
	Returned   Stat          `json:"returned_seconds,omitzero"`
	Stages     []StageFigure `json:"stages,omitempty"`
	Bottleneck string        `json:"bottleneck,omitempty"`
	Runs       []Sample      `json:"runs"`
}

// StageFigure is one pipeline stage.
type StageFigure struct {
	Name string `json:"name"`
	// Seconds summed over the stage's workers (median over runs).
	Seconds float64 `json:"seconds"`
	Workers int     `json:"workers"`
	// Busy: the share of the pipeline's time that each worker spent in
	// the stage (Seconds / Workers / pipeline seconds).
	Busy float64 `json:"busy"`
	// Bytes into the stage, and the rate the stage sustains with its
	// workers: Bytes / (Seconds / Workers).
	Bytes int64   `json:"bytes"`
	MBps  float64 `json:"mb_per_s"`
	// CPUSeconds: the process's CPU time apportioned to the stages by
	// their time (an estimate: it equals Seconds unless more workers were
	// runnable than there were CPUs, when waiting for a CPU is scaled out).
	CPUSeconds float64 `json:"cpu_seconds"`
}

// Comparison is mover (main settings) against a peer on one operation:
// ratios mover / peer of the medians.
type Comparison struct {
	Peer       string  `json:"peer"`
	Op         Op      `json:"op"`
	Throughput float64 `json:"throughput"`
	CPU        float64 `json:"cpu"`
	PeakRSS    float64 `json:"peak_rss"`
	RepoBytes  float64 `json:"repo_bytes,omitempty"`
}

// Name is the result's tool and variant, e.g. "mover workers=4".
func (r Result) Name() string {
	if r.Variant == "" {
		return r.Tool
	}
	return r.Tool + " " + r.Variant
}

// Find returns the result of a tool, variant and operation.
func (rep *Report) Find(tool, variant string, op Op) (Result, bool) {
	for _, r := range rep.Results {
		if r.Tool == tool && r.Variant == variant && r.Op == op {
			return r, true
		}
	}
	return Result{}, false
}

// build summarises the samples.
func (rep *Report) build(order []resultKey, samples map[resultKey][]Sample) {
	size := rep.Scenario.Volume.Size
	for _, k := range order {
		runs := samples[k]
		res := Result{Tool: k.tool, Variant: k.variant, Op: k.op, Size: size, Runs: runs}
		var secs, returned, mb, cpu, rss, repoBytes []float64
		for _, s := range runs {
			secs = append(secs, s.Seconds)
			returned = append(returned, cmp.Or(s.ReturnedSeconds, s.Seconds))
			if s.Seconds > 0 {
				mb = append(mb, float64(size)/s.Seconds/1e6)
			}
			cpu = append(cpu, s.CPU())
			rss = append(rss, float64(s.PeakRSS))
			repoBytes = append(repoBytes, float64(s.RepoBytes))
		}
		res.Seconds, res.MBps, res.CPU, res.PeakRSS, res.RepoBytes = statOf(secs), statOf(mb), statOf(cpu), statOf(rss), statOf(repoBytes)
		if !k.op.isExport() {
			res.Returned = statOf(returned)
		}
		if k.tool == "mover" {
			res.Stages, res.Bottleneck = stageFigures(k.op, size, runs)
		}
		rep.Results = append(rep.Results, res)
	}
	for _, p := range rep.Peers {
		for _, op := range AllOps() {
			m, ok1 := rep.Find("mover", "", op)
			o, ok2 := rep.Find(p.Name, "", op)
			if !ok1 || !ok2 {
				continue
			}
			c := Comparison{Peer: p.Name, Op: op, Throughput: ratio(m.MBps.Median, o.MBps.Median),
				CPU: ratio(m.CPU.Median, o.CPU.Median), PeakRSS: ratio(m.PeakRSS.Median, o.PeakRSS.Median)}
			if op.isExport() {
				c.RepoBytes = ratio(m.RepoBytes.Median, o.RepoBytes.Median)
			}
			rep.Comparisons = append(rep.Comparisons, c)
		}
	}
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// medianRun returns the run with the median wall time (the lower one of
// an even count).
func medianRun(runs []Sample) Sample {
	s := slices.Clone(runs)
	slices.SortFunc(s, func(a, b Sample) int {
		switch {
		case a.Seconds < b.Seconds:
			return -1
		case a.Seconds > b.Seconds:
			return 1
		}
		return 0
	})
	return s[(len(s)-1)/2]
}

// stageFigures builds the stage breakdown of a mover operation and names
// its bottleneck.
func stageFigures(op Op, size int64, runs []Sample) ([]StageFigure, string) {
	if len(runs) == 0 {
		return nil, ""
	}
	med := func(f func(Stages) float64) float64 {
		v := make([]float64, len(runs))
		for i, s := range runs {
			v[i] = f(s.Stages)
		}
		return statOf(v).Median
	}
	m := medianRun(runs)
	var pipeline, cpu []float64
	for _, s := range runs {
		pipeline = append(pipeline, s.PipelineSeconds)
		cpu = append(cpu, s.CPU())
	}
	wall, procCPU := statOf(pipeline).Median, statOf(cpu).Median
	var st []StageFigure
	add := func(name string, secs float64, workers int, bytes int64) {
		st = append(st, StageFigure{Name: name, Seconds: secs, Workers: max(workers, 1), Bytes: bytes})
	}
	if op.isExport() {
		data := max(0, min(m.ReadBytes, size-m.ZeroBytes-m.ReusedBytes))
		add("read", med(func(s Stages) float64 { return s.Read }), m.Workers, m.ReadBytes)
		add("zero check", med(func(s Stages) float64 { return s.ZeroCheck }), m.Workers, m.ReadBytes)
		add("cut", med(func(s Stages) float64 { return s.Cut }), m.Workers, data)
		add("hash", med(func(s Stages) float64 { return s.Hash }), m.Workers, data)
		add("compress", med(func(s Stages) float64 { return s.Compress }), m.Workers, m.NewBytes)
		add("encrypt", med(func(s Stages) float64 { return s.Encrypt }), m.Workers, m.NewBytes)
		add("upload", med(func(s Stages) float64 { return s.Upload }), m.Uploads, m.StoredBytes)
	} else {
		add("download", med(func(s Stages) float64 { return s.Download }), m.Downloads, m.FetchedBytes)
		add("decrypt+verify", med(func(s Stages) float64 { return s.DecryptVerify }), m.Downloads, m.FetchedBytes)
		// One writer beside the download workers (mover.ImportOptions.Writers).
		add("write", med(func(s Stages) float64 { return s.Write }), 1, m.WrittenBytes+m.ZeroedBytes)
	}
	var total float64
	for _, s := range st {
		total += s.Seconds
	}
	scale := 1.0
	if total > 0 {
		scale = min(1, procCPU/total)
	}
	best, bottleneck := 0.0, ""
	for i := range st {
		s := &st[i]
		s.CPUSeconds = s.Seconds * scale
		per := s.Seconds / float64(s.Workers)
		if wall > 0 {
			s.Busy = per / wall
		}
		if per > 1e-6 {
			s.MBps = float64(s.Bytes) / per / 1e6
		}
		if s.Busy > best {
			best, bottleneck = s.Busy, s.Name
		}
	}
	return st, bottleneck
}

// Text writes the report for a terminal: the facts, warnings, tables
// (Tables) aligned in columns, and the raw speed.
func (rep *Report) Text(out io.Writer) error {
	ew := &errWriter{w: out}
	p := func(format string, args ...any) { fmt.Fprintf(ew, format, args...) }
	p("mover bench: %s\n", rep.ScenarioText)
	for _, w := range rep.Warnings() {
		p("WARNING: %s\n", w)
	}
	for _, f := range rep.Facts() {
		if f.Name == "" {
			p("%s\n", f.Value)
		} else {
			p("%s: %s\n", f.Name, f.Value)
		}
	}
	for _, t := range rep.Tables() {
		p("\n%s:\n", t.Title)
		tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
		for _, c := range t.Columns {
			fmt.Fprintf(tw, "%s\t", c.Name)
		}
		fmt.Fprintln(tw)
		for _, r := range t.Rows {
			for _, c := range r.Cells {
				fmt.Fprintf(tw, "%s\t", c)
			}
			fmt.Fprintln(tw)
		}
		tw.Flush()
		for _, n := range t.Notes {
			p("%s\n", n)
		}
	}
	if lines := rep.RawLines(); len(lines) > 0 {
		p("\n")
		for _, l := range lines {
			p("%s\n", l)
		}
	}
	return ew.err
}

// rawShare sets mover's full export and import against the storage's best
// raw read and write speeds, in one line ("" without figures).
func (rep *Report) rawShare() string {
	if rep.Raw == nil {
		return ""
	}
	best := map[string]float64{}
	for _, pt := range rep.Raw.Points {
		best[pt.Mode] = max(best[pt.Mode], pt.MBps)
	}
	var parts []string
	for _, x := range []struct {
		op   Op
		mode string
	}{{FullExport, "read"}, {FullImport, "write"}} {
		r, ok := rep.Find("mover", "", x.op)
		if !ok || best[x.mode] == 0 {
			continue
		}
		parts = append(parts, fmt.Sprintf("mover %s %.0f MB/s is %.0f%% of the best raw %s (%.0f MB/s)", x.op, r.MBps.Median, 100*r.MBps.Median/best[x.mode], x.mode, best[x.mode]))
	}
	if len(parts) == 0 {
		return ""
	}
	return strings.Join(parts, "; ") + " (MB/s of volume size: holes and dedup make it exceed the storage's speed)"
}

func (rep *Report) runsLine() string {
	how := "each run a child process (CPU and peak RSS are the run's own)"
	if !rep.Setup.Child {
		how = "runs in one process (peak RSS is the process's peak so far)"
	}
	return fmt.Sprintf("%d run(s) per operation, tools interleaved, %s; figures are medians (min–max); MB/s = volume size / wall seconds", rep.Setup.Runs, how)
}

func rateText(mbps float64) string {
	if mbps == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", mbps)
}

// errWriter keeps the first write error, so that a report written in many
// small writes fails once.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

// peerLine says how peers are timed, or "" without peers.
func (rep *Report) peerLine() string {
	for _, pe := range rep.Peers {
		if pe.Available {
			return "peers read the same image and run interleaved with mover; their restores are timed with an fdatasync of the restored file, as mover's import syncs its target"
		}
	}
	return ""
}

func noteSuffix(note string) string {
	if note == "" {
		return ""
	}
	return "; " + note
}
