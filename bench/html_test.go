package bench

import (
	"context"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// chromium returns the headless browser. Without one the test fails (make
// tools installs Debian's chromium) unless BLOCKMOVER_SKIP_BROWSER=1.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("BLOCKMOVER_SKIP_BROWSER") == "1" {
		t.Skip("no chromium and BLOCKMOVER_SKIP_BROWSER=1")
	}
	t.Fatal("chromium not found: run make tools (apt-get install chromium), or set BLOCKMOVER_SKIP_BROWSER=1 to skip")
	return ""
}

// headless runs chromium on a page with extra arguments and returns its
// standard output.
func headless(t *testing.T, browser, page string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	all := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir()}, args...)
	cmd := exec.CommandContext(ctx, browser, append(all, "file://"+page)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", browser, err, stderr.String())
	}
	return out
}

// expectedCharts lists, from the report's figures alone, each chart's ID
// and its number of data points.
func expectedCharts(rep *Report) map[string]int {
	want := map[string]int{}
	tools := 0
	for _, r := range rep.Results {
		if r.Variant != "" {
			continue
		}
		tools++
		if r.Tool != "mover" {
			continue
		}
		n := 0
		for _, s := range r.Stages {
			if s.MBps > 0 {
				n++
			}
		}
		if n > 0 {
			want["stages-"+string(r.Op)] = n
		}
	}
	for _, id := range []string{"tools-throughput", "tools-cpu", "tools-rss"} {
		want[id] = tools
	}
	for _, sw := range rep.Sweeps {
		want["sweep-"+sw.Key] = len(sw.Values) * len(rep.Ops)
	}
	if rep.Raw != nil && len(rep.Raw.Points) > 0 {
		want["raw"] = len(rep.Raw.Points)
	}
	return want
}

var (
	svgRe      = regexp.MustCompile(`(?s)<svg\b([^>]*)>(.*?)</svg>`)
	attrRe     = regexp.MustCompile(`\b(class|id|data-points)="([^"]*)"`)
	markRe     = regexp.MustCompile(`<rect\b[^>]*\bclass="mark"`)
	gridRe     = regexp.MustCompile(`<line\b[^>]*\bclass="gridline"`)
	xAxisRe    = regexp.MustCompile(`(?s)<g\b[^>]*\bclass="axis x-axis"[^>]*>(.*?)</g>`)
	yAxisRe    = regexp.MustCompile(`(?s)<g\b[^>]*\bclass="axis y-axis"[^>]*>(.*?)</g>`)
	tickRe     = regexp.MustCompile(`<text\b[^>]*\bclass="tick-label"[^>]*>([^<]*)</text>`)
	axisLineRe = regexp.MustCompile(`<line\b[^>]*\bclass="axis-line"`)
	titleRe    = regexp.MustCompile(`<text\b[^>]*\bclass="axis-title"[^>]*>([^<]*)</text>`)
	labelRe    = regexp.MustCompile(`<text\b[^>]*\bclass="label"`)
	warningRe  = regexp.MustCompile(`(?s)<p\b[^>]*\bclass="warning"[^>]*>(.*?)</p>`)
)

// checkAxes checks a rendered chart's axes: a value axis with a line, at
// least two ticks, every one labelled with a number, and a title (the
// unit); a gridline per tick; a category axis with a label per mark.
func checkAxes(t *testing.T, id, body string, marks int) {
	t.Helper()
	x := xAxisRe.FindStringSubmatch(body)
	if x == nil {
		t.Errorf("chart %s: no value axis", id)
		return
	}
	ticks := tickRe.FindAllStringSubmatch(x[1], -1)
	if len(ticks) < 2 || len(axisLineRe.FindAllString(x[1], -1)) != 1 {
		t.Errorf("chart %s: value axis with %d ticks and %d lines", id, len(ticks), len(axisLineRe.FindAllString(x[1], -1)))
	}
	for _, tk := range ticks {
		if _, err := strconv.ParseFloat(strings.TrimRight(tk[1], "kMG"), 64); err != nil {
			t.Errorf("chart %s: tick labelled %q", id, tk[1])
		}
	}
	if ti := titleRe.FindStringSubmatch(x[1]); ti == nil || strings.TrimSpace(ti[1]) == "" {
		t.Errorf("chart %s: the value axis has no title", id)
	}
	if g := len(gridRe.FindAllString(body, -1)); g != len(ticks) {
		t.Errorf("chart %s: %d gridlines for %d ticks", id, g, len(ticks))
	}
	y := yAxisRe.FindStringSubmatch(body)
	if y == nil || len(axisLineRe.FindAllString(y[1], -1)) != 1 || len(labelRe.FindAllString(y[1], -1)) != marks {
		t.Errorf("chart %s: the category axis does not label each of %d marks", id, marks)
	}
}

// TestReportRendersInChromium writes the HTML report of a small scenario
// (every operation, a sweep, restic when installed, the raw speed) on a
// machine whose load reading is faked as busy, and loads it in headless
// Chromium: the DOM Chromium built holds every chart as an <svg> with one
// mark per data point, axes with labelled ticks and gridlines, and the
// load warning; the screenshot shows bars and the warning.
func TestReportRendersInChromium(t *testing.T) {
	browser := chromium(t)
	sc := smallScenario()
	sc.Volume.Size = 32 << 20
	cfg := Config{Scenario: sc, Runs: 1, Work: t.TempDir(), KDF: testKDF, Polynomial: checkPolynomial,
		Sweeps: []Sweep{{Key: "zstd", Values: []string{"fastest", "better"}}},
		Raw:    RawOptions{Size: 4 << 20, QueueDepths: []int{1, 2}},
		// A load of one per core: above the warning's 0.5.
		LoadAverage: func() float64 { return float64(runtime.NumCPU()) }}
	if _, err := exec.LookPath("restic"); err == nil {
		cfg.Peers = []string{"restic"}
	}
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	page := filepath.Join(t.TempDir(), "report.html")
	f, err := os.Create(page)
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.HTML(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	src, _ := os.ReadFile(page)
	for _, ext := range []string{"<script", "src=", "href=", "url(", "http://", "https://"} {
		if strings.Contains(string(src), ext) {
			t.Fatalf("the report is not self-contained: it holds %q", ext)
		}
	}

	dom := string(headless(t, browser, page, "--dump-dom"))
	want := expectedCharts(rep)
	got := map[string]int{}
	for _, m := range svgRe.FindAllStringSubmatch(dom, -1) {
		attrs := map[string]string{}
		for _, a := range attrRe.FindAllStringSubmatch(m[1], -1) {
			attrs[a[1]] = a[2]
		}
		if attrs["class"] != "chart" {
			continue
		}
		marks := len(markRe.FindAllString(m[2], -1))
		if n, _ := strconv.Atoi(attrs["data-points"]); n != marks {
			t.Errorf("chart %s: %d marks, data-points says %d", attrs["id"], marks, n)
		}
		got[attrs["id"]] = marks
		checkAxes(t, attrs["id"], m[2], marks)
	}
	if w := warningRe.FindStringSubmatch(dom); w == nil || !strings.Contains(w[1], "busy before the run") {
		t.Errorf("no load warning on the page of a loaded machine (load %.2f on %d cores)", rep.Machine.LoadBefore, rep.Machine.CPUs)
	}
	if len(got) != len(want) {
		t.Errorf("the rendered page has %d charts %v, the report %d %v", len(got), got, len(want), want)
	}
	for id, n := range want {
		if got[id] != n {
			t.Errorf("chart %s: %d marks rendered, the report has %d data points", id, got[id], n)
		}
	}

	shot := filepath.Join(t.TempDir(), "report.png")
	headless(t, browser, page, "--screenshot="+shot, "--window-size=1000,6000", "--hide-scrollbars")
	sf, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	img, err := png.Decode(sf)
	if err != nil {
		t.Fatal(err)
	}
	// Pixels of the first palette colour (#3b6fb6): bars were painted;
	// of the warning's background (#fde2e1): the warning is visible.
	blue, warn := 0, 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			switch [3]uint32{r >> 8, g >> 8, bl >> 8} {
			case [3]uint32{0x3b, 0x6f, 0xb6}:
				blue++
			case [3]uint32{0xfd, 0xe2, 0xe1}:
				warn++
			}
		}
	}
	if blue < 1000 {
		t.Errorf("the screenshot shows %d pixels of bar colour: the charts did not render", blue)
	}
	if warn < 1000 {
		t.Errorf("the screenshot shows %d pixels of the warning's colour: the load warning is not visible", warn)
	}
}
