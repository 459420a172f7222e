package main

// Progress of export and import: a bar on a terminal, slog records at a
// low rate when the logs are structured (in a pod), JSON lines otherwise.

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/blockmover/blockmover/internal/units"
	"github.com/blockmover/blockmover/mover"
	"golang.org/x/term"
)

// rateWindow is how far back the current rate looks.
const rateWindow = 10 * time.Second

// Slog progress records are written every progressLogEvery and whenever
// the percentage crosses a multiple of progressLogStep, and at the end.
const (
	progressLogEvery = 30 * time.Second
	progressLogStep  = 10 // percent
)

// progressLine is one JSON line of progress on stderr.
type progressLine struct {
	Op      string  `json:"op"`
	Percent float64 `json:"percent"`
	mover.Progress
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	// MBPerSecond is the current rate (over the last 10 s), in MB/s.
	MBPerSecond float64 `json:"mb_per_s"`
}

// progressFunc returns the progress callback for op, which also feeds the
// metrics (pod.go). See progressOutput for what it prints.
func (g *globalOptions) progressFunc(op string) func(mover.Progress) {
	return g.pod.observe(op, g.progressOutput(op))
}

// progressOutput returns what prints op's progress: nothing with --quiet;
// slog records (every 30 s and at each 10 %) when the logs are structured
// and stderr is not a terminal, as in a pod; JSON lines with --json or
// when stderr is not a terminal; else a bar that fits the terminal's
// width.
func (g *globalOptions) progressOutput(op string) func(mover.Progress) {
	if g.quiet {
		return nil
	}
	w := g.env.stderr
	f, isFile := w.(*os.File)
	tty := isFile && term.IsTerminal(int(f.Fd()))
	var rm rateMeter
	if l := g.pod.structuredLog(); l != nil && !tty {
		pl := &progressLog{log: l, op: op}
		return func(p mover.Progress) { pl.report(p, rm.add(p)) }
	}
	if g.json || !tty {
		enc := json.NewEncoder(w)
		return func(p mover.Progress) {
			r := rm.add(p)
			enc.Encode(progressLine{Op: op, Percent: percent(p), Progress: p, ElapsedSeconds: p.Elapsed.Seconds(), MBPerSecond: float64(int(r/1e5)) / 10})
		}
	}
	c := g.pod.console
	if c == nil {
		c = newConsole(f)
	}
	return func(p mover.Progress) {
		r := rm.add(p)
		c.status(barLine(op, p, r, c.width()), p.DoneBytes >= p.Size)
	}
}

// percent is the share of the volume processed, rounded down to 0.1 %.
func percent(p mover.Progress) float64 {
	if p.Size <= 0 {
		return 100
	}
	return float64(int(1000*float64(p.DoneBytes)/float64(p.Size))) / 10
}

// rateMeter computes the current rate from progress reports: the bytes
// done over the last rateWindow of elapsed time (the whole run while it is
// shorter). It is not safe for concurrent use; progress callbacks come
// from one goroutine.
type rateMeter struct {
	samples []rateSample
}

type rateSample struct {
	at   time.Duration
	done int64
}

// add records p and returns the current rate in bytes per second.
func (r *rateMeter) add(p mover.Progress) float64 {
	if len(r.samples) == 0 {
		r.samples = append(r.samples, rateSample{}) // the start
	}
	r.samples = append(r.samples, rateSample{p.Elapsed, p.DoneBytes})
	// Keep one sample at or before the window's start.
	from := p.Elapsed - rateWindow
	i := 0
	for i+1 < len(r.samples) && r.samples[i+1].at <= from {
		i++
	}
	r.samples = append(r.samples[:0], r.samples[i:]...)
	first, last := r.samples[0], r.samples[len(r.samples)-1]
	dt := (last.at - first.at).Seconds()
	if dt <= 0 || last.done < first.done {
		return 0
	}
	return float64(last.done-first.done) / dt
}

// eta is the time left at rate bytes per second, rounded to seconds; 0
// when unknown.
func eta(p mover.Progress, rate float64) time.Duration {
	if rate <= 0 || p.DoneBytes >= p.Size {
		return 0
	}
	return time.Duration(float64(p.Size-p.DoneBytes)/rate) * time.Second
}

// barLine is the progress bar of op for a terminal width columns wide. It
// is shorter than width (the last column is left free, so no terminal
// wraps it): the parts that do not fit are left out, the ETA first, then
// the byte counts of the op, the rate and the sizes; the bar shrinks to
// what is left, from 40 cells down to 10, and goes before the
// percentage does. It is ASCII only, so its length is its width.
func barLine(op string, p mover.Progress, rate float64, width int) string {
	const minBar, maxBar = 10, 40
	avail := width - 1
	pct := percent(p)
	head := op
	tail := fmt.Sprintf("%5.1f%%", pct)
	extra := fmt.Sprintf("new %s stored %s", units.Bytes(p.NewBytes), units.Bytes(p.StoredBytes))
	if op == "import" {
		extra = fmt.Sprintf("written %s", units.Bytes(p.WrittenBytes))
	}
	opt := []string{
		units.Bytes(p.DoneBytes) + "/" + units.Bytes(p.Size),
		units.Rate(rate),
		extra,
	}
	if d := eta(p, rate); d > 0 {
		opt = append(opt, "ETA "+d.String())
	}
	// The optional parts that fit beside a bar of minBar cells, in order.
	used := len(head) + 1 + len(tail)
	withBar := minBar + 3 // " [" + cells + "]"
	for _, s := range opt {
		if used+1+len(s)+withBar > avail {
			break
		}
		tail += " " + s
		used += 1 + len(s)
	}
	cells := min(maxBar, avail-used-3)
	if cells < minBar {
		line := head + " " + tail
		if len(line) > avail {
			line = line[:max(avail, 0)]
		}
		return line
	}
	n := int(pct / 100 * float64(cells))
	return head + " [" + strings.Repeat("#", n) + strings.Repeat(".", cells-n) + "] " + tail
}

// console is a terminal's stderr shared by a status line (the progress
// bar, redrawn in place) and whole lines of other output (log records):
// a line written while a status is shown goes above it, and the status is
// drawn again below. It is safe for concurrent use.
type console struct {
	mu    sync.Mutex
	w     io.Writer
	fd    int
	shown string // the status line on screen, "" if none
}

func newConsole(f *os.File) *console { return &console{w: f, fd: int(f.Fd())} }

// width is the terminal's width in columns (80 when it cannot be read).
// It is read on every call, so a resized window is followed.
func (c *console) width() int {
	if w, _, err := term.GetSize(c.fd); err == nil && w > 0 {
		return w
	}
	return 80
}

// status draws line in place of the previous status line; final ends it
// with a newline, so the next output starts below it.
func (c *console) status(line string, final bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.w, "\r%s\x1b[K", line)
	c.shown = line
	if final {
		fmt.Fprintln(c.w)
		c.shown = ""
	}
}

// endStatus moves below a status line still shown (a run that failed
// before its last report), so that what follows does not overwrite it.
func (c *console) endStatus() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.shown != "" {
		fmt.Fprintln(c.w)
		c.shown = ""
	}
}

// Write writes b (whole lines) above the status line.
func (c *console) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.shown == "" {
		return c.w.Write(b)
	}
	if _, err := io.WriteString(c.w, "\r\x1b[K"); err != nil {
		return 0, err
	}
	n, err := c.w.Write(b)
	if err == nil {
		_, err = fmt.Fprintf(c.w, "%s\x1b[K", c.shown)
	}
	return n, err
}

// progressLog writes progress as slog records, in the schema of the other
// logs, at a low rate: every progressLogEvery, at each progressLogStep
// percent, and at the end.
type progressLog struct {
	log       *slog.Logger
	op        string
	last      time.Duration // elapsed time of the last record
	milestone int           // the last multiple of progressLogStep logged
	ended     bool
}

func (l *progressLog) report(p mover.Progress, rate float64) {
	pct := percent(p)
	step := int(pct) / progressLogStep
	end := p.DoneBytes >= p.Size
	if l.ended || !(end || step > l.milestone || p.Elapsed-l.last >= progressLogEvery) {
		return
	}
	l.last, l.milestone, l.ended = p.Elapsed, step, end
	attrs := []any{"percent", pct, "done_bytes", p.DoneBytes, "size", p.Size,
		"bytes_per_second", int64(rate), "elapsed_seconds", p.Elapsed.Seconds()}
	if d := eta(p, rate); d > 0 {
		attrs = append(attrs, "eta_seconds", d.Seconds())
	}
	if l.op == "import" {
		attrs = append(attrs, "written_bytes", p.WrittenBytes, "fetched_bytes", p.FetchedBytes, "zero_bytes", p.ZeroBytes)
	} else {
		attrs = append(attrs, "read_bytes", p.ReadBytes, "zero_bytes", p.ZeroBytes, "new_bytes", p.NewBytes, "stored_bytes", p.StoredBytes)
	}
	l.log.Info(l.op+" progress", attrs...)
}
