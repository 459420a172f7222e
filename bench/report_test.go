package bench

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// fakeReport is a report built by hand: mover and restic, every figure the
// renderers write, two runs of mover's full export.
func fakeReport() *Report {
	const mib = 1 << 20
	sample := func(secs float64, read, stored int64) Sample {
		return Sample{Seconds: secs, PipelineSeconds: secs - 0.1, UserCPU: 1, SysCPU: 0.5, PeakRSS: 100 * mib, ReadBytes: read, StoredBytes: stored,
			Stages: Stages{Read: 0.5, Compress: 1.5, Upload: 0.2}, Workers: 2, Uploads: 1, Downloads: 2, NewBytes: stored}
	}
	rep := &Report{Version: ReportVersion, Started: time.Date(2026, 12, 3, 13, 0, 0, 0, time.UTC), Seconds: 30,
		Machine:      Machine{CPUs: 2, Mover: "v1.2.3", LoadBefore: 0.2},
		Scenario:     smallScenario(),
		ScenarioText: "small", ChangeText: "1% scattered", ChangedBytes: mib, ChangeExtents: 16,
		Setup: Setup{Source: "image file", Target: "file", Repo: "/tmp/r", RepoFS: "ext4", Runs: 2, Child: true},
		Ops:   AllOps(),
		Peers: []Peer{{Name: "restic", Available: true, Version: "restic 0.19.1"}},
	}
	rep.Scenario.Volume.Size = 64 * mib
	order := []resultKey{{"mover", "", FullExport}, {"mover", "", IncrementalExport}, {"mover", "", FullImport}, {"restic", "", FullExport}, {"restic", "", FullImport}}
	samples := map[resultKey][]Sample{
		order[0]: {sample(1.0, 64*mib, 20*mib), sample(1.2, 64*mib, 20*mib)},
		order[1]: {sample(0.5, 2*mib, mib/2)},
		order[2]: {{Seconds: 0.8, UserCPU: 1, PeakRSS: 50 * mib, FetchedBytes: 20 * mib, WrittenBytes: 40 * mib, Stages: Stages{Download: 0.3, DecryptVerify: 0.3, Write: 0.2}, Downloads: 2}},
		order[3]: {{Seconds: 3, UserCPU: 4, PeakRSS: 200 * mib, StoredBytes: 21 * mib, RepoBytes: 21 * mib}},
		order[4]: {{Seconds: 2.5, ReturnedSeconds: 2.0, UserCPU: 3, PeakRSS: 150 * mib}},
	}
	rep.build(order, samples)
	return rep
}

// TestRenderersAgree: the text, Markdown and HTML reports write the same
// results model: every column (the read column included), the read
// amplification and stored bytes per changed byte of the incremental
// export, the spread of the runs, a peer's restore as returned and
// durable, the n/a row, the stages, the warning and the baseline.
func TestRenderersAgree(t *testing.T) {
	rep := fakeReport()
	old := fakeReport()
	for i := range old.Results {
		old.Results[i].Seconds.Median *= 1.25 // mover's full export: 1.375 s then, 1.10 s now: −20%
	}
	rep.SetBaseline(old)
	rep.LoadWarning = loadWarning(3, 2)
	want := []string{
		"read", "64 MiB", // the read column, which only the text report had
		"read / changed", "2.00×", "stored / changed", "0.50×",
		"spread", "18%", "1.10 (1.00–1.20)",
		"s as returned", "2.00", "2.50",
		"n/a", "cannot restore incrementally",
		"40 MiB written",
		"bottleneck: compress", "CPU s (est.)",
		"was 1.38 (−20%)", "baseline",
		"busy before the run", "load average 3.00 on 2 cores",
		"mover / restic", "2.75×",
		"mover v1.2.3",
	}
	for _, tc := range []struct {
		name   string
		render func(*strings.Builder) error
	}{
		{"text", func(b *strings.Builder) error { return rep.Text(b) }},
		{"markdown", func(b *strings.Builder) error { return rep.Markdown(b) }},
		{"html", func(b *strings.Builder) error { return rep.HTML(b) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			if err := tc.render(&b); err != nil {
				t.Fatal(err)
			}
			got := strings.ToLower(b.String())
			for _, w := range want {
				if !strings.Contains(got, strings.ToLower(w)) {
					t.Errorf("no %q in\n%s", w, b.String())
				}
			}
		})
	}
}

func TestLoadWarning(t *testing.T) {
	for _, tc := range []struct {
		load float64
		cpus int
		warn bool
	}{
		{0, 2, false}, {1.0, 2, false}, {1.01, 2, true}, {0.6, 1, true}, {40, 0, false},
	} {
		if got := loadWarning(tc.load, tc.cpus); (got != "") != tc.warn {
			t.Errorf("load %.2f on %d cores: %q", tc.load, tc.cpus, got)
		}
	}
	var b strings.Builder
	if err := fakeReport().Text(&b); err != nil || strings.Contains(b.String(), "WARNING") {
		t.Errorf("a quiet machine warned: %v\n%s", err, b.String())
	}
}

func TestCellString(t *testing.T) {
	for _, tc := range []struct {
		cell Cell
		want string
	}{
		{textCell("mover"), "mover"},
		{figure(UnitSeconds, 1.234), "1.23"},
		{ranged(UnitRate, Stat{100, 90, 120}), "100 (90–120)"},
		{figure(UnitRate, 0), "-"},
		{figure(UnitBytes, 3<<20), "3 MiB"},
		{figure(UnitPercent, 0.125), "12%"},
		{Cell{Unit: UnitRatio, Value: Stat{2, 2, 2}, Base: 1.6, HasBase: true}, "2.00×, was 1.60× (+25%)"},
		{Cell{Unit: UnitSeconds, Value: Stat{1, 1, 1}, Base: 1.001, HasBase: true}, "1.00, unchanged"},
		{Cell{Unit: UnitSeconds, Value: Stat{1, 1, 1}, Base: 1.3, HasBase: true}, "1.00, was 1.30 (−23%)"},
		{Cell{Unit: UnitBytes, Value: Stat{1 << 10, 1 << 10, 1 << 10}, Text: "written"}, "1 KiB written"},
	} {
		if got := tc.cell.String(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.cell, got, tc.want)
		}
	}
}

func TestAxisTicks(t *testing.T) {
	for _, tc := range []struct {
		name    string
		lo, hi  float64
		log     bool
		want    []string
		wantTop float64
	}{
		{"linear", 0, 873, false, []string{"0", "200", "400", "600", "800", "1000"}, 1000},
		{"linear small", 0, 0.9, false, []string{"0.0", "0.2", "0.4", "0.6", "0.8", "1.0"}, 1},
		{"linear exact", 0, 50, false, []string{"0", "10", "20", "30", "40", "50"}, 50},
		{"no values", 0, 0, false, []string{"0.0", "0.2", "0.4", "0.6", "0.8", "1.0"}, 1},
		{"log decades", 3, 2500, true, []string{"0.1", "1", "10", "100", "1000", "10k"}, 10000},
		{"log one decade", 120, 700, true, []string{"10", "20", "50", "100", "200", "500", "1000"}, 1000},
		{"log fractions", 0.05, 40, true, []string{"0.001", "0.01", "0.1", "1", "10", "100"}, 100},
		{"log large", 150, 3e7, true, []string{"10", "100", "1000", "10k", "100k", "1M", "10M", "100M"}, 1e8},
		{"linear large", 0, 73000, false, []string{"0", "20k", "40k", "60k", "80k"}, 80000},
		{"log without positive values", 0, 10, true, []string{"0", "2", "4", "6", "8", "10"}, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAxis(tc.lo, tc.hi, tc.log)
			var got []string
			for _, v := range a.ticks {
				got = append(got, a.label(v))
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") || a.hi != tc.wantTop {
				t.Errorf("ticks %v up to %g, want %v up to %g", got, a.hi, tc.want, tc.wantTop)
			}
			if p := a.pos(a.hi, 100); p != 100 {
				t.Errorf("the axis' end at %g, want 100", p)
			}
			if p := a.pos(tc.hi, 100); p > 100 || p <= 0 && tc.hi > 0 {
				t.Errorf("the largest value at %g of 100", p)
			}
		})
	}
}

// TestReadReport: a report written as JSON reads back as a baseline;
// anything else is refused with ErrReport.
func TestReadReport(t *testing.T) {
	b, err := json.Marshal(fakeReport())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, in string
		ok       bool
	}{
		{"a report", string(b), true},
		{"empty", "", false},
		{"not JSON", "restic 0.19.1", false},
		{"other JSON", `{"snapshot":"abc"}`, false},
		{"a later version", strings.Replace(string(b), `"version":1`, `"version":2`, 1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old, err := ReadReport(strings.NewReader(tc.in))
			if !tc.ok {
				if !errors.Is(err, ErrReport) {
					t.Fatalf("err %v, want ErrReport", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			rep := fakeReport()
			rep.SetBaseline(old)
			if res := rep.Tables()[0]; !res.Rows[0].Cells[2].HasBase {
				t.Errorf("no baseline in the results: %+v", res.Rows[0])
			}
		})
	}
}

// TestChartBaseline: with a baseline, each per-tool bar has the earlier
// value drawn across it and written beside it.
func TestChartBaseline(t *testing.T) {
	rep, old := fakeReport(), fakeReport()
	for i := range old.Results {
		old.Results[i].MBps.Median /= 2
	}
	rep.SetBaseline(old)
	for _, c := range rep.Charts() {
		if c.ID != "tools-throughput" {
			continue
		}
		svg := c.svg()
		if n := strings.Count(svg, `class="baseline"`); n != len(c.Points) || !strings.Contains(svg, "(+100%)") {
			t.Errorf("%d baseline marks for %d points:\n%s", n, len(c.Points), svg)
		}
		return
	}
	t.Fatal("no throughput chart")
}
