package main

import (
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestSpareProc: export and import run with one P more than the CPUs
// (spareProc) and give it back when they end, also when they fail; their
// worker counts come from the CPUs, not from the raised GOMAXPROCS.
func TestSpareProc(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	restore := spareProc()
	if got := runtime.GOMAXPROCS(0); got != before+1 {
		t.Fatalf("during spareProc: GOMAXPROCS %d, want %d", got, before+1)
	}
	restore()
	if got := runtime.GOMAXPROCS(0); got != before {
		t.Fatalf("after spareProc: GOMAXPROCS %d, want %d", got, before)
	}

	c, dir := newCLI(t)
	img := filepath.Join(dir, "v.img")
	makeImage(t, img, 8<<20)
	c.ok("init")
	c.ok("export", "-q", "--source", img, "--name", "v")
	c.ok("import", "-q", "--snapshot", "latest", "--target", filepath.Join(dir, "out.img"))
	// An import that fails inside the data path: a pack's bit flipped.
	flipByte(t, objects(t, c.env["MOVER_REPOSITORY"], "data")[0], func(n int) int { return n / 3 })
	if r := c.run("import", "-q", "--snapshot", "latest", "--target", filepath.Join(dir, "out2.img")); r.code == 0 || !strings.Contains(r.stderr, "authentication failed") {
		t.Fatalf("import of a damaged pack: exit %d, stderr %q", r.code, r.stderr)
	}
	if got := runtime.GOMAXPROCS(0); got != before {
		t.Fatalf("after the commands: GOMAXPROCS %d, want %d", got, before)
	}

	var bo backendOptions
	if got := bo.downloads(dir); got != before {
		t.Errorf("downloads from a directory: %d, want one per CPU (%d)", got, before)
	}
	if got, want := bo.downloads("s3://bucket/prefix"), max(4, 2*before); got != want {
		t.Errorf("downloads from S3: %d, want %d", got, want)
	}
}
