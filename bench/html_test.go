package bench

import (
	"context"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
	svgRe  = regexp.MustCompile(`(?s)<svg\b([^>]*)>(.*?)</svg>`)
	attrRe = regexp.MustCompile(`\b(class|id|data-points)="([^"]*)"`)
	markRe = regexp.MustCompile(`<rect\b[^>]*\bclass="mark"`)
)

// TestReportRendersInChromium writes the HTML report of a small scenario
// (every operation, a sweep, restic when installed, the raw speed) and
// loads it in headless Chromium: the DOM Chromium built holds every chart
// as an <svg> with one mark per data point, and the screenshot shows bars.
func TestReportRendersInChromium(t *testing.T) {
	browser := chromium(t)
	sc := smallScenario()
	sc.Volume.Size = 32 << 20
	cfg := Config{Scenario: sc, Runs: 1, Work: t.TempDir(), KDF: testKDF, Polynomial: checkPolynomial,
		Sweeps: []Sweep{{Key: "zstd", Values: []string{"fastest", "better"}}},
		Raw:    RawOptions{Size: 4 << 20, QueueDepths: []int{1, 2}}}
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
	// Pixels of the first palette colour (#3b6fb6): bars were painted.
	blue := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			if r>>8 == 0x3b && g>>8 == 0x6f && bl>>8 == 0xb6 {
				blue++
			}
		}
	}
	if blue < 1000 {
		t.Errorf("the screenshot shows %d pixels of bar colour: the charts did not render", blue)
	}
}
