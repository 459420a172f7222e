package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/blockmover/blockmover/internal/units"
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
		var secs, mb, cpu, rss, repoBytes []float64
		for _, s := range runs {
			secs = append(secs, s.Seconds)
			if s.Seconds > 0 {
				mb = append(mb, float64(size)/s.Seconds/1e6)
			}
			cpu = append(cpu, s.CPU())
			rss = append(rss, float64(s.PeakRSS))
			repoBytes = append(repoBytes, float64(s.RepoBytes))
		}
		res.Seconds, res.MBps, res.CPU, res.PeakRSS, res.RepoBytes = statOf(secs), statOf(mb), statOf(cpu), statOf(rss), statOf(repoBytes)
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
		add("decrypt+verify", med(func(s Stages) float64 { return s.Decode }), m.Downloads, m.FetchedBytes)
		add("write", med(func(s Stages) float64 { return s.Write }), m.Downloads, m.WrittenBytes+m.ZeroedBytes)
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

// Text writes the report as tables for a terminal.
func (rep *Report) Text(out io.Writer) error {
	ew := &errWriter{w: out}
	var w io.Writer = ew
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("mover bench: %s\n", rep.ScenarioText)
	p("change: %s (%s in %d extents)\n", rep.ChangeText, units.Bytes(rep.ChangedBytes), rep.ChangeExtents)
	p("machine: %s; load %.2f before, %.2f after\n", rep.Machine, rep.Machine.LoadBefore, rep.Machine.LoadAfter)
	p("source: %s\n", rep.Setup.Source)
	p("repositories: %s (%s), a fresh one per run; import target: %s\n", rep.Setup.Repo, rep.Setup.RepoFS, rep.Setup.Target)
	p("%s\n", rep.runsLine())
	if l := rep.peerLine(); l != "" {
		p("%s\n", l)
	}
	for _, pe := range rep.Peers {
		if pe.Available {
			p("peer: %s%s\n", pe.Version, noteSuffix(pe.Note))
		} else {
			p("peer %s: %s\n", pe.Name, pe.Note)
		}
	}
	p("\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "tool\toperation\tseconds\tMB/s\tCPU s\tpeak RSS\tread\tstored\trepository\t")
	for _, r := range rep.Results {
		m := medianRun(r.Runs)
		read, stored := "", ""
		if r.Op.isExport() {
			if r.Tool == "mover" {
				read = units.Bytes(m.ReadBytes)
			}
			stored = units.Bytes(m.StoredBytes)
		} else if r.Tool == "mover" {
			read = units.Bytes(m.FetchedBytes)
			stored = units.Bytes(m.WrittenBytes) + " written"
		}
		repoS := ""
		if r.Op.isExport() && r.RepoBytes.Median > 0 {
			repoS = units.Bytes(int64(r.RepoBytes.Median))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.1f\t%s\t%s\t%s\t%s\t\n", r.Name(), r.Op, statText(r.Seconds, "%.2f"), statText(r.MBps, "%.0f"),
			r.CPU.Median, units.Bytes(int64(r.PeakRSS.Median)), read, stored, repoS)
	}
	var noInc []string
	for _, pe := range rep.Peers {
		if pe.Available && slices.Contains(rep.Ops, IncrementalImport) {
			fmt.Fprintf(tw, "%s\t%s\tn/a\t\t\t\t\t\t\t\n", pe.Name, IncrementalImport)
			noInc = append(noInc, pe.Name)
		}
	}
	tw.Flush()
	if len(noInc) > 0 {
		p("(n/a: %s cannot restore incrementally onto a target that holds the base snapshot)\n", strings.Join(noInc, ", "))
	}
	for _, c := range rep.Comparisons {
		p("\nmover / %s, %s: %.2f× throughput, %.2f× CPU seconds, %.2f× peak RSS", c.Peer, c.Op, c.Throughput, c.CPU, c.PeakRSS)
		if c.RepoBytes > 0 {
			p(", %.2f× repository size", c.RepoBytes)
		}
	}
	if len(rep.Comparisons) > 0 {
		p("\n")
	}
	for _, r := range rep.Results {
		if r.Tool != "mover" || r.Variant != "" || len(r.Stages) == 0 {
			continue
		}
		m := medianRun(r.Runs)
		p("\nmover %s per stage (pipeline %.2f s of %.2f s wall; stage seconds summed over workers):\n", r.Op, m.PipelineSeconds, m.Seconds)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "stage\tseconds\tworkers\tbusy\tMB/s of the stage\tCPU s (est.)\tbytes in\t")
		for _, s := range r.Stages {
			fmt.Fprintf(tw, "%s\t%.2f\t%d\t%.0f%%\t%s\t%.2f\t%s\t\n", s.Name, s.Seconds, s.Workers, 100*s.Busy, rateText(s.MBps), s.CPUSeconds, units.Bytes(s.Bytes))
		}
		tw.Flush()
		if r.Bottleneck != "" {
			for _, s := range r.Stages {
				if s.Name == r.Bottleneck {
					p("bottleneck: %s (its workers were busy %.0f%% of the pipeline's time)\n", s.Name, 100*s.Busy)
				}
			}
		}
	}
	if raw := rep.Raw; raw != nil {
		p("\nraw sequential speed of %s (%s, O_DIRECT, %s I/Os):", raw.Path, raw.Kind, units.Bytes(int64(raw.BlockSize)))
		if raw.Note != "" {
			p(" %s", raw.Note)
		}
		for _, pt := range raw.Points {
			p(" %s QD%d %.0f MB/s;", pt.Mode, pt.QueueDepth, pt.MBps)
		}
		p("\n")
		if line := rep.rawShare(); line != "" {
			p("%s\n", line)
		}
	}
	for _, sw := range rep.Sweeps {
		p("\nsweep %s (MB/s, median and range):\n", sw.Key)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprint(tw, "value\t")
		for _, op := range rep.Ops {
			fmt.Fprintf(tw, "%s\t", op)
		}
		fmt.Fprintln(tw, "peak RSS\trepository\tincremental stored\t")
		for _, v := range sw.Values {
			fmt.Fprintf(tw, "%s\t", v)
			var rss float64
			for _, op := range rep.Ops {
				r, ok := rep.Find("mover", sw.Key+"="+v, op)
				if !ok {
					fmt.Fprint(tw, "\t")
					continue
				}
				fmt.Fprintf(tw, "%s\t", statText(r.MBps, "%.0f"))
				rss = max(rss, r.PeakRSS.Median)
			}
			repoB, incStored := rep.sweepBytes(sw.Key + "=" + v)
			fmt.Fprintf(tw, "%s\t%s\t%s\t\n", units.Bytes(int64(rss)), repoB, incStored)
		}
		tw.Flush()
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

// sweepBytes returns a variant's repository size after the full export and
// the bytes its incremental export stored, as text ("" if not measured).
func (rep *Report) sweepBytes(variant string) (repoBytes, incStored string) {
	if r, ok := rep.Find("mover", variant, FullExport); ok {
		repoBytes = units.Bytes(int64(r.RepoBytes.Median))
	}
	if r, ok := rep.Find("mover", variant, IncrementalExport); ok {
		incStored = units.Bytes(medianRun(r.Runs).StoredBytes)
	}
	return repoBytes, incStored
}

func (rep *Report) runsLine() string {
	how := "each run a child process (CPU and peak RSS are the run's own)"
	if !rep.Setup.Child {
		how = "runs in one process (peak RSS is the process's peak so far)"
	}
	return fmt.Sprintf("%d run(s) per operation, tools interleaved, %s; figures are medians (min–max); MB/s = volume size / wall seconds", rep.Setup.Runs, how)
}

func statText(s Stat, format string) string {
	m := fmt.Sprintf(format, s.Median)
	if s.Min == s.Max {
		return m
	}
	return fmt.Sprintf("%s ("+format+"–"+format+")", m, s.Min, s.Max)
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
