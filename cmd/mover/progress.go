package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/blockmover/blockmover/internal/units"
	"github.com/blockmover/blockmover/mover"
	"golang.org/x/term"
)

// progressLine is one JSON line of progress on stderr.
type progressLine struct {
	Op      string  `json:"op"`
	Percent float64 `json:"percent"`
	mover.Progress
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	MBPerSecond    float64 `json:"mb_per_s"`
}

// progressFunc returns the progress callback for op: a bar on a terminal,
// JSON lines when --json is given or stderr is not a terminal, nothing with
// --quiet.
func (g *globalOptions) progressFunc(op string) func(mover.Progress) {
	return g.pod.observe(op, g.progressOutput(op))
}

func (g *globalOptions) progressOutput(op string) func(mover.Progress) {
	if g.quiet {
		return nil
	}
	w := g.env.stderr
	f, isFile := w.(*os.File)
	tty := isFile && term.IsTerminal(int(f.Fd()))
	if g.json || !tty {
		enc := json.NewEncoder(w)
		return func(p mover.Progress) {
			enc.Encode(progressLine{Op: op, Percent: percent(p), Progress: p, ElapsedSeconds: p.Elapsed.Seconds(), MBPerSecond: rate(p)})
		}
	}
	return func(p mover.Progress) { drawBar(w, op, p) }
}

func percent(p mover.Progress) float64 {
	if p.Size == 0 {
		return 100
	}
	return float64(int(1000*float64(p.DoneBytes)/float64(p.Size))) / 10
}

func rate(p mover.Progress) float64 {
	s := p.Elapsed.Seconds()
	if s <= 0 {
		return 0
	}
	return float64(int(10*float64(p.DoneBytes)/s/1e6)) / 10
}

func drawBar(w io.Writer, op string, p mover.Progress) {
	const width = 30
	pct := percent(p)
	n := int(pct / 100 * width)
	eta := ""
	if r := rate(p); r > 0 && p.DoneBytes < p.Size {
		eta = " ETA " + (time.Duration(float64(p.Size-p.DoneBytes)/(r*1e6)) * time.Second / time.Second * time.Second).String()
	}
	extra := fmt.Sprintf("new %s stored %s", units.Bytes(p.NewBytes), units.Bytes(p.StoredBytes))
	if op == "import" {
		extra = fmt.Sprintf("written %s", units.Bytes(p.WrittenBytes))
	}
	fmt.Fprintf(w, "\r%s [%s%s] %5.1f%% %s/%s %.0f MB/s %s%s\x1b[K", op, strings.Repeat("#", n), strings.Repeat(".", width-n),
		pct, units.Bytes(p.DoneBytes), units.Bytes(p.Size), rate(p), extra, eta)
	if p.DoneBytes >= p.Size {
		fmt.Fprintln(w)
	}
}
