package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/blockmover/blockmover/repo/backend"
)

// TestCLIDamagedSnapshot: one damaged snapshot file does not block the
// listing, latest, forget or the other volumes.
func TestCLIDamagedSnapshot(t *testing.T) {
	c, dir := newCLI(t)
	repoDir := c.env["MOVER_REPOSITORY"]
	c.ok("init")
	ids := map[string]string{}
	for i, vol := range []string{"a", "b", "a-newest"} {
		img := filepath.Join(dir, vol+".img")
		makeImageSeed(t, img, 2<<20, uint64(i))
		r := c.ok("export", "-q", "--json", "--source", img, "--name", vol)
		var out exportJSON
		json.Unmarshal([]byte(r.stdout), &out)
		ids[vol] = out.Snapshot
	}
	bad := filepath.Join(repoDir, "snapshots", ids["a-newest"])
	flipByte(t, bad, func(n int) int { return n / 2 })

	// The listing reads summaries, not snapshot files: damage inside a
	// file is found by the commands that read it (check, latest, import,
	// forget's policy).
	r := c.ok("snapshots")
	if !strings.Contains(r.stdout, ids["a-newest"][:8]+"  ") || strings.Contains(r.stdout, "DAMAGED") {
		t.Fatalf("snapshots from summaries:\n%s%s", r.stdout, r.stderr)
	}
	r = c.run("check")
	if r.code == 0 || !strings.Contains(r.stdout+r.stderr, "snapshots/"+ids["a-newest"]) {
		t.Fatalf("check does not report the damaged snapshot file: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// Without its summary (a repository written before summaries), the
	// listing reads the file and finds the damage.
	if err := os.Remove(filepath.Join(repoDir, "summaries", ids["a-newest"])); err != nil {
		t.Fatal(err)
	}
	r = c.ok("snapshots")
	if !strings.Contains(r.stdout, ids["a"][:8]) || !strings.Contains(r.stdout, ids["b"][:8]) ||
		!strings.Contains(r.stdout, ids["a-newest"][:8]+"  DAMAGED") || !strings.Contains(r.stderr, "snapshots/"+ids["a-newest"]) {
		t.Fatalf("snapshots with a damaged file:\n%s%s", r.stdout, r.stderr)
	}
	r = c.ok("snapshots", "--json")
	var list []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list) != 3 {
		t.Fatalf("snapshots --json: %v\n%s", err, r.stdout)
	}
	if list[2]["id"] != ids["a-newest"] || !strings.Contains(list[2]["damaged"].(string), "content does not match its name") || list[0]["damaged"] != nil {
		t.Fatalf("snapshots --json does not mark the damaged file: %s", r.stdout)
	}

	// latest skips the damaged newest file, with a warning naming it.
	r = c.ok("import", "--json", "-q", "--snapshot", "latest", "--target", filepath.Join(dir, "o1.img"))
	var im importJSON
	json.Unmarshal([]byte(r.stdout), &im)
	if im.Snapshot != ids["b"] || !strings.Contains(r.stderr, "warning") || !strings.Contains(r.stderr, "snapshots/"+ids["a-newest"]) {
		t.Fatalf("import latest: %s\n%s", r.stdout, r.stderr)
	}
	c.ok("import", "-q", "--snapshot", "latest:a", "--target", filepath.Join(dir, "o2.img"))
	a, _ := os.ReadFile(filepath.Join(dir, "a.img"))
	b, _ := os.ReadFile(filepath.Join(dir, "o2.img"))
	if !bytes.Equal(a, b) {
		t.Fatal("latest:a did not import volume a")
	}

	// Policies skip it with a warning; forget by ID removes it unread.
	r = c.ok("forget", "--keep-last", "5")
	if !strings.Contains(r.stderr, "snapshots/"+ids["a-newest"]) {
		t.Fatalf("forget by policy does not warn about the damaged file: %q", r.stderr)
	}
	c.ok("forget", ids["a-newest"][:8])
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Fatalf("forget did not remove the damaged snapshot: %v", err)
	}
	r = c.ok("snapshots")
	if strings.Contains(r.stdout, "DAMAGED") || r.stderr != "" {
		t.Fatalf("snapshots after forget:\n%s%s", r.stdout, r.stderr)
	}
}

// countingGets counts the Gets of keys under a prefix.
type countingGets struct {
	backend.Backend
	prefix string
	n      *atomic.Int64
}

func (c countingGets) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if strings.HasPrefix(key, c.prefix) {
		c.n.Add(1)
	}
	return c.Backend.Get(ctx, key, off, n)
}

// TestSnapshotsReadsNoIndex: listing snapshots needs no index, and reads
// none (issue 18: at 10M chunks the load took 17 s).
func TestSnapshotsReadsNoIndex(t *testing.T) {
	c, dir := newCLI(t)
	img := filepath.Join(dir, "a.img")
	makeImage(t, img, 4<<20)
	c.ok("init")
	c.ok("export", "-q", "--source", img, "--volume", "a")
	var n atomic.Int64
	var out, errb strings.Builder
	env := &environment{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(k string) string { return c.env[k] },
		wrapBackend: func(be backend.Backend) backend.Backend { return countingGets{be, "index/", &n} }}
	if code := run(context.Background(), []string{"snapshots"}, env); code != 0 || !strings.Contains(out.String(), " a ") {
		t.Fatalf("snapshots: exit %d, %q %q", code, out.String(), errb.String())
	}
	if n.Load() != 0 {
		t.Errorf("snapshots read %d index files", n.Load())
	}
}
