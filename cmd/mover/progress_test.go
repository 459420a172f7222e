package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blockmover/blockmover/mover"
	"github.com/blockmover/blockmover/repo/backend"
)

// TestBarLineFits: at every width the bar line is shorter than the
// terminal, so it never wraps; it keeps the percentage as long as it can,
// and the bar from 27 columns on.
func TestBarLineFits(t *testing.T) {
	ps := []mover.Progress{
		{Size: 40 << 30, DoneBytes: 17 << 30, NewBytes: 3 << 30, StoredBytes: 1 << 30, Elapsed: time.Minute},
		{Size: 5 << 40, DoneBytes: 5 << 40, NewBytes: 5 << 40, StoredBytes: 5 << 40, Elapsed: time.Hour},
		{Size: 1000, DoneBytes: 1, Elapsed: time.Second},
	}
	for _, op := range []string{"export", "import"} {
		for _, p := range ps {
			for width := 1; width <= 200; width++ {
				line := barLine(op, p, 123.4e6, width)
				if len(line) >= width {
					t.Fatalf("width %d: %d-character line %q", width, len(line), line)
				}
				pct := fmt.Sprintf("%5.1f%%", percent(p))
				if width > len(op)+len(pct)+1 && !strings.Contains(line, pct) {
					t.Errorf("width %d: %q lacks the percentage", width, line)
				}
				if width >= 27 && !strings.Contains(line, "[") {
					t.Errorf("width %d: %q has no bar", width, line)
				}
			}
		}
	}
	if l := barLine("export", ps[0], 100e6, 200); !strings.Contains(l, "ETA ") || !strings.Contains(l, "95 MiB/s") || !strings.Contains(l, " 42.5%") {
		t.Errorf("wide line %q lacks the ETA, the rate or the percentage", l)
	}
}

// TestRateMeterCurrent: the rate is that of the last 10 s, not the average
// since the start.
func TestRateMeterCurrent(t *testing.T) {
	var r rateMeter
	var done int64
	var rate float64
	for s := 1; s <= 30; s++ {
		if s <= 20 {
			done += 100e6
		} else {
			done += 10e6
		}
		rate = r.add(mover.Progress{Size: 10e9, DoneBytes: done, Elapsed: time.Duration(s) * time.Second})
		if s == 1 && rate != 100e6 {
			t.Errorf("after 1 s: %v B/s, want 100e6", rate)
		}
	}
	if rate != 10e6 {
		t.Errorf("after 20 s at 100 MB/s and 10 s at 10 MB/s: %v B/s, want 10e6 (the average is 70e6)", rate)
	}
	if len(r.samples) > 12 {
		t.Errorf("%d samples kept for a 10 s window at 1 Hz", len(r.samples))
	}
	if d := eta(mover.Progress{Size: 10e9, DoneBytes: done}, rate); d != time.Duration((10e9-float64(done))/10e6)*time.Second {
		t.Errorf("ETA %v", d)
	}
}

// TestProgressLogCadence: as slog records, a six-hour export reports
// every 30 s and at each 10 %, with the final 100 %: about 730 records,
// not the 21,600 of 1 Hz lines, each in the schema of the other logs.
func TestProgressLogCadence(t *testing.T) {
	var buf bytes.Buffer
	g := &globalOptions{env: &environment{stderr: &buf, getenv: func(string) string { return "" }}}
	g.pod.env = g.env
	g.pod.structured, g.pod.json = true, true
	g.pod.log = slog.New(slog.NewJSONHandler(&buf, nil)).With("op", "export")
	fn := g.progressFunc("export")
	const seconds = 6 * 3600
	const size = int64(seconds) * 100e6
	for s := 1; s <= seconds; s++ {
		fn(mover.Progress{Size: size, DoneBytes: int64(s) * 100e6, ReadBytes: int64(s) * 100e6, Elapsed: time.Duration(s) * time.Second})
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) > seconds/30+10 || len(lines) < seconds/30 {
		t.Errorf("%d records for %d reports, want about %d", len(lines), seconds, seconds/30)
	}
	var last struct {
		Level, Msg, Op string
		Percent        float64
		Size           int64
		DoneBytes      int64 `json:"done_bytes"`
		BytesPerSecond int64 `json:"bytes_per_second"`
		Time           time.Time
	}
	for _, l := range lines {
		if err := json.Unmarshal([]byte(l), &last); err != nil || last.Msg != "export progress" || last.Op != "export" || last.Level != "INFO" || last.Time.IsZero() {
			t.Fatalf("record %q: %v", l, err)
		}
	}
	if last.Percent != 100 || last.DoneBytes != size || last.BytesPerSecond != 100e6 {
		t.Errorf("last record %+v: want 100 %% at 100 MB/s", last)
	}

	// Milestones: a fast run logs at each 10 %, and once at the end.
	buf.Reset()
	fn = g.progressFunc("import")
	for s := 1; s <= 20; s++ {
		fn(mover.Progress{Size: 20, DoneBytes: int64(s), Elapsed: time.Duration(s) * time.Second})
	}
	fn(mover.Progress{Size: 20, DoneBytes: 20, Elapsed: 21 * time.Second}) // the final report, again
	if n := strings.Count(buf.String(), `"msg":"import progress"`); n != 10 {
		t.Errorf("%d records for a 20 s import, want one per 10 %%:\n%s", n, buf.String())
	}
}

// TestLogFormatText: --log-format text prints text records (it discarded
// them before), and progress as low-rate text records.
func TestLogFormatText(t *testing.T) {
	c, dir := newCLI(t)
	img := filepath.Join(dir, "vol.img")
	makeImage(t, img, 8<<20)
	c.ok("init")
	r := c.ok("export", "--source", img, "--name", "v", "--log-format", "text")
	for _, want := range []string{`level=INFO msg="export starting" op=export volume=v`, `msg="export progress" op=export percent=100`, `msg="export done"`} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if strings.Contains(r.stderr, "{") {
		t.Errorf("JSON on stderr with --log-format text:\n%s", r.stderr)
	}
}

// progressDemo draws an export's progress bar on this process's stderr as
// a terminal run does, with a retry logged halfway (TestMain runs it for
// TestProgressInTmux).
func progressDemo() {
	env := &environment{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	g := &globalOptions{env: env}
	g.pod.env = env
	g.pod.console = newConsole(os.Stderr) // as podState.run does on a terminal
	g.pod.log = slog.New(slog.NewTextHandler(g.pod.console, &slog.HandlerOptions{Level: slog.LevelWarn})).With("op", "export")
	fn := g.progressFunc("export")
	const size, steps = 40 << 30, 40
	for i := 0; i <= steps; i++ {
		done := int64(size) * int64(i) / steps
		fn(mover.Progress{Size: size, DoneBytes: done, ReadBytes: done, NewBytes: done / 3, StoredBytes: done / 5, Elapsed: time.Duration(i) * time.Second})
		if i == steps/2 {
			g.pod.retried(backend.RetryEvent{Op: backend.OpPut, Key: "data/ab/ab12", Attempt: 1, Delay: 300 * time.Millisecond, Err: errors.New("SlowDown")})
		}
		time.Sleep(5 * time.Millisecond)
	}
	fmt.Fprintln(os.Stderr, "demo done")
}

// TestProgressInTmux: in a real terminal of 80 columns (tmux), the bar is
// redrawn in place: once done, the screen holds one bar line, shorter than
// the terminal, at 100 %, the retry's log line above it, and no stale
// line.
func TestProgressInTmux(t *testing.T) {
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		t.Skip("no tmux")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "tmux.sock")
	done := filepath.Join(dir, "done")
	tm := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(tmux, append([]string{"-S", sock, "-f", "/dev/null"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	shell := fmt.Sprintf("MOVER_TEST_PROGRESS=1 %q; touch %q; sleep 600", os.Args[0], done)
	tm("new-session", "-d", "-x", "80", "-y", "24", shell)
	defer exec.Command(tmux, "-S", sock, "kill-server").Run()
	if w := strings.TrimSpace(tm("display-message", "-p", "#{pane_width}")); w != "80" {
		t.Fatalf("pane width %s, want 80", w)
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(done); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the demo did not finish; screen:\n%s", tm("capture-pane", "-p"))
		}
	}
	screen := tm("capture-pane", "-p", "-J") // -J joins wrapped lines: a wrapped bar would be one long line
	var bars, logs int
	for _, l := range strings.Split(strings.TrimRight(screen, "\n"), "\n") {
		switch {
		case strings.HasPrefix(l, "export ["):
			bars++
			if len(strings.TrimRight(l, " ")) >= 80 || !strings.Contains(l, "100.0%") {
				t.Errorf("bar line %q (%d columns): want < 80 columns at 100.0%%", l, len(l))
			}
		case strings.Contains(l, "storage request failed"):
			logs++
			if !strings.HasPrefix(l, "time=") || strings.Contains(l, "[#") {
				t.Errorf("log line mixed with the bar: %q", l)
			}
		case strings.Contains(l, "%"):
			t.Errorf("stale progress: %q", l)
		}
	}
	if bars != 1 || logs != 1 {
		t.Errorf("%d bar lines and %d log lines, want 1 and 1; screen:\n%s", bars, logs, screen)
	}
}
