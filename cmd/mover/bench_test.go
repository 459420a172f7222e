package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLIBench runs mover bench on a small scenario with each run a child
// process (this test binary, as mover) and checks its three outputs.
func TestCLIBench(t *testing.T) {
	t.Setenv("MOVER_TEST_EXEC", "1") // children run as mover (TestMain)
	c, dir := newCLI(t)
	html, md := filepath.Join(dir, "report.html"), filepath.Join(dir, "BENCHMARKS.md")
	os.WriteFile(md, []byte("# Benchmarks\n\nby hand\n"), 0o644)
	r := c.ok("bench", "--preset", "mixed", "--size", "32MiB", "--runs", "1", "--no-raw", "--workdir", filepath.Join(dir, "work"),
		"--sweep", "zstd=fastest,better", "--html", html, "--markdown", md, "--json")
	var rep struct {
		Setup   struct{ Child bool }
		Results []struct {
			Tool, Variant, Op string
			Runs              []struct {
				Seconds float64
				PeakRSS int64 `json:"peak_rss"`
			}
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("--json stdout is not one JSON object: %v\n%s", err, r.stdout)
	}
	if !rep.Setup.Child || len(rep.Results) != 12 {
		t.Fatalf("child runs %v, %d results, want 12", rep.Setup.Child, len(rep.Results))
	}
	for _, res := range rep.Results {
		if len(res.Runs) != 1 || res.Runs[0].Seconds <= 0 || res.Runs[0].PeakRSS <= 0 {
			t.Errorf("%s %s %s: %+v", res.Tool, res.Variant, res.Op, res.Runs)
		}
	}
	if b, err := os.ReadFile(html); err != nil || !strings.Contains(string(b), `<svg class="chart"`) {
		t.Errorf("--html: %v", err)
	}
	if b, _ := os.ReadFile(md); !strings.HasPrefix(string(b), "# Benchmarks\n\nby hand\n") || !strings.Contains(string(b), "<!-- mover bench: end -->") {
		t.Errorf("--markdown:\n%s", b)
	}
	// The JSON is a baseline for the next run: each figure beside the
	// earlier one.
	old := filepath.Join(dir, "old.json")
	os.WriteFile(old, []byte(r.stdout), 0o644)
	again := c.ok("bench", "--preset", "mixed", "--size", "32MiB", "--runs", "1", "--no-raw", "--in-process", "--ops", "full-export",
		"--workdir", filepath.Join(dir, "work"), "--baseline", old)
	if !strings.Contains(again.stdout, "baseline: the run of") || !strings.Contains(again.stdout, ", was ") {
		t.Errorf("--baseline: the report shows no earlier figures:\n%s", again.stdout)
	}
	if _, err := os.Stat(filepath.Join(dir, "work", "repos")); err == nil {
		entries, _ := os.ReadDir(filepath.Join(dir, "work", "repos"))
		if len(entries) > 0 {
			t.Errorf("repositories left behind: %v", entries)
		}
	}
}

func TestCLIBenchUsage(t *testing.T) {
	c, _ := newCLI(t)
	for _, tc := range []struct {
		want string
		args []string
	}{
		{"--destroy-data", []string{"bench", "--device", "/dev/null"}},
		{"unknown preset", []string{"bench", "--preset", "tape"}},
		{"sweep", []string{"bench", "--sweep", "threads=1,2"}},
		{"--size", []string{"bench", "--size", "big"}},
		{"unknown operation", []string{"bench", "--ops", "backup"}},
		{"pattern", []string{"bench", "--change-pattern", "diagonal"}},
		{"--zstd", []string{"bench", "--zstd", "max"}},
		{"--runs", []string{"bench", "--runs", "0"}},
		{"--zero NaN", []string{"bench", "--size", "1MiB", "--runs", "1", "--no-raw", "--in-process", "--zero", "NaN"}},
		{"--ratio", []string{"bench", "--size", "1MiB", "--runs", "1", "--no-raw", "--in-process", "--ratio", "NaN"}},
		{"--connections", []string{"bench", "--size", "1MiB", "--runs", "1", "--no-raw", "--in-process", "--connections", "1000000000"}},
		{"--workers", []string{"bench", "--size", "1MiB", "--runs", "1", "--no-raw", "--in-process", "--workers", "5000"}},
		{"--baseline", []string{"bench", "--size", "1MiB", "--baseline", "/nonexistent/old.json"}},
		{"not a mover bench report", []string{"bench", "--size", "1MiB", "--baseline", "/dev/null"}},
	} {
		c.fails(exitUsage, tc.want, tc.args...)
	}
}
