// Package scale holds `make scale` (issue 18): it builds large repositories
// (synthetic index files in the real format, and thousands of snapshots
// written through repo's own writer), runs mover commands against them as
// child processes, and prints a table of wall time, peak RSS (/usr/bin/time)
// and, on S3, the requests each command made (counted by a proxy in front
// of the server).
//
// It runs only with BLOCKMOVER_SCALE=1 and takes minutes; it is not part of
// make test. Settings (environment):
//
//	MOVER_BIN        the mover binary measured (default: built from this tree)
//	SCALE_WORK       where the repositories go (default: a temporary
//	                 directory); directory repositories found there from an
//	                 earlier run are reused, so that two binaries (before and
//	                 after a change) are measured on the same repositories
//	SCALE_CHUNKS     index sizes for the export rows (default 0,1000000,10000000)
//	SCALE_SNAPSHOTS  snapshot counts (default 1000,10000)
//	SCALE_HOLES      size of the holes-only volume imported from S3 (default 4TiB)
//	                 ("none" in any of these three skips those rows)
//	SCALE_GC         index sizes for the gc rows (default: the largest of
//	                 SCALE_CHUNKS; "none" skips them)
//	SCALE_OUT        also write the table (Markdown) to this file
package scale

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockmover/blockmover/internal/safego"
	"github.com/blockmover/blockmover/internal/units"
	"github.com/blockmover/blockmover/repo"
	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/fs"
	"github.com/blockmover/blockmover/repo/backend/s3"
	"github.com/blockmover/blockmover/repo/backend/s3/s3test"
	"github.com/blockmover/blockmover/repo/repotest"
)

const password = "scale"

// row is one measured command.
type row struct {
	what, where string
	wall        time.Duration
	rssKiB      int64
	gets, lists int64 // S3 only
	note        string
}

type harness struct {
	t     *testing.T
	mover string
	work  string
	cache string // XDG_CACHE_HOME of the children
	s3    *s3test.Server
	proxy *countingProxy
	rows  []row
}

func TestScale(t *testing.T) {
	if os.Getenv("BLOCKMOVER_SCALE") == "" {
		t.Skip("make scale runs this (BLOCKMOVER_SCALE=1)")
	}
	s3test.SetTestEnv()
	h := &harness{t: t, mover: os.Getenv("MOVER_BIN"), work: os.Getenv("SCALE_WORK")}
	if h.work == "" {
		h.work = t.TempDir()
	}
	if h.mover == "" {
		h.mover = filepath.Join(t.TempDir(), "mover")
		out, err := exec.Command("go", "build", "-o", h.mover, "github.com/blockmover/blockmover/cmd/mover").CombinedOutput()
		if err != nil {
			t.Fatalf("go build: %v: %s", err, out)
		}
	}
	h.cache = filepath.Join(h.work, "cache")
	os.RemoveAll(h.cache)
	ver, _ := exec.Command(h.mover, "version").Output()
	load, _ := os.ReadFile("/proc/loadavg")
	header := fmt.Sprintf("%s; %s; load %s", strings.TrimSpace(string(ver)), time.Now().UTC().Format("2006-01-02 15:04 MST"), strings.Join(strings.Fields(string(load))[:3], " "))
	t.Log(header)

	h.s3 = s3test.Start(t, false)
	h.proxy = newCountingProxy(t, h.s3.Endpoint)

	for _, n := range intList(t, "SCALE_CHUNKS", "0,1000000,10000000") {
		h.exportRows(n)
	}
	for _, n := range h.gcSizes() {
		h.gcRows(n)
	}
	for _, n := range intList(t, "SCALE_SNAPSHOTS", "1000,10000") {
		h.snapshotRows(n, false)
		h.snapshotRows(n, true)
	}
	if os.Getenv("SCALE_HOLES") != "none" {
		h.importHoles()
	}

	table := h.table(header)
	fmt.Println(table)
	if out := os.Getenv("SCALE_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(table), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// gcSizes returns the chunk counts of the gc rows.
func (h *harness) gcSizes() []int {
	switch v := os.Getenv("SCALE_GC"); v {
	case "none":
		return nil
	case "":
		if chunks := intList(h.t, "SCALE_CHUNKS", "0,1000000,10000000"); len(chunks) > 0 {
			return []int{slices.Max(chunks)}
		}
		return nil
	}
	return intList(h.t, "SCALE_GC", "")
}

func intList(t *testing.T, env, def string) []int {
	v := os.Getenv(env)
	if v == "" {
		v = def
	}
	var out []int
	if v == "none" {
		return nil
	}
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			t.Fatalf("%s: %v", env, err)
		}
		out = append(out, n)
	}
	return out
}

// run runs mover with args against location loc and measures it.
func (h *harness) run(loc string, args ...string) row {
	h.t.Helper()
	full := append([]string{}, args...)
	if strings.HasPrefix(loc, "s3://") {
		full = append(full, "--s3-endpoint", h.proxy.url, "--s3-path-style")
	}
	// Peak RSS from /usr/bin/time: a child started by Go shares this
	// process's memory until it execs, and getrusage counts that.
	rssFile := filepath.Join(h.work, "rss")
	cmd := exec.Command("/usr/bin/time", append([]string{"-f", "%M", "-o", rssFile, h.mover}, full...)...)
	cmd.Env = append(os.Environ(), "MOVER_PASSWORD="+password, "MOVER_REPOSITORY="+loc, "XDG_CACHE_HOME="+h.cache)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.Stdout = nil
	h.proxy.reset()
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if err != nil {
		h.t.Fatalf("mover %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	b, err := os.ReadFile(rssFile)
	if err != nil {
		h.t.Fatal(err)
	}
	rss, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		h.t.Fatalf("/usr/bin/time: %q: %v", b, err)
	}
	r := row{what: "mover " + strings.Join(args, " "), wall: wall, rssKiB: rss}
	if strings.HasPrefix(loc, "s3://") {
		r.gets, r.lists = h.proxy.gets.Load(), h.proxy.lists.Load()
	}
	h.t.Logf("%s (%s): %v, %s, %d GETs", r.what, loc, wall.Round(time.Millisecond), units.Bytes(rss<<10), r.gets)
	return r
}

func (h *harness) add(r row, what, where, note string) {
	r.what, r.where, r.note = what, where, note
	h.rows = append(h.rows, r)
}

// openRepo opens a directory or S3 repository in this process.
func (h *harness) openRepo(ctx context.Context, loc string) *repo.Repository {
	h.t.Helper()
	var be backend.Backend
	var err error
	if b, prefix, ok := strings.Cut(strings.TrimPrefix(loc, "s3://"), "/"); strings.HasPrefix(loc, "s3://") && ok {
		var sb *s3.Backend
		sb, err = s3.Open(ctx, s3.Options{Bucket: b, Prefix: prefix, Endpoint: h.s3.Endpoint, PathStyle: true, MaxConns: 32})
		be = sb
		if err == nil {
			h.t.Cleanup(func() { sb.Close() })
		}
	} else {
		be, err = fs.Open(loc)
	}
	if err != nil {
		h.t.Fatal(err)
	}
	r, err := repo.Open(ctx, backend.NewLimit(be, 32), []byte(password), repo.Options{NoIndex: true})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { r.Close() })
	return r
}

// exportRows: a new 64 MiB volume exported into a directory repository
// whose index has n synthetic chunks, with no local cache (cold) and again
// with the cache the first export left (warm); and the listing there.
func (h *harness) exportRows(n int) {
	ctx := context.Background()
	loc := filepath.Join(h.work, fmt.Sprintf("chunks-%d", n))
	if _, err := os.Stat(filepath.Join(loc, "config")); err != nil {
		os.RemoveAll(loc)
		h.run(loc, "init")
		r := h.openRepo(ctx, loc)
		start := time.Now()
		if err := repo.GenerateIndex(ctx, r, repo.GenerateIndexOptions{Blobs: n, Seed: uint64(n) + 1, PutPack: repotest.DirPut(loc)}); err != nil {
			h.t.Fatal(err)
		}
		h.t.Logf("generated %d chunks in %v", n, time.Since(start))
	}
	where := "directory, " + count(n) + " chunks"
	vol := filepath.Join(h.work, "vol.img")
	for _, pass := range []string{"cold cache", "warm cache"} {
		os.RemoveAll(h.cache)
		if pass == "warm cache" {
			// The cache of an open, not of the first export itself.
			h.run(loc, "export", "-q", "--source", writeVolume(h.t, vol, 64<<20), "--volume", "warmup")
		}
		r := h.run(loc, "export", "-q", "--source", writeVolume(h.t, vol, 64<<20), "--volume", "new")
		h.add(r, "export of a new 64 MiB volume", where, pass)
	}
	h.add(h.run(loc, "snapshots"), "snapshots", where, "")
}

// gcRows measures gc's index compaction on a copy of the repository of n
// synthetic chunks that exportRows built: hard links (`cp -al`), since
// every object is written once under a new name and never changed in
// place, so gc's writes and deletes in the copy leave the original as it
// was. The first gc merges the export-sized index files (32 packs each)
// into files of about 200,000 entries; then one small export, and a
// second gc, which should rewrite only the small index files, whatever the
// repository's size. The index files replaced and the bytes written are
// read from the directory before and after each gc, not from gc's report.
func (h *harness) gcRows(n int) {
	src := filepath.Join(h.work, fmt.Sprintf("chunks-%d", n))
	if _, err := os.Stat(filepath.Join(src, "config")); err != nil {
		h.t.Fatalf("gc rows: no repository of %d chunks in %s (SCALE_CHUNKS must include it): %v", n, h.work, err)
	}
	loc := filepath.Join(h.work, fmt.Sprintf("gc-%d", n))
	os.RemoveAll(loc)
	start := time.Now()
	if out, err := exec.Command("cp", "-al", src, loc).CombinedOutput(); err != nil {
		h.t.Fatalf("cp -al: %v: %s", err, out)
	}
	defer os.RemoveAll(loc)
	h.t.Logf("linked %s to %s in %v", src, loc, time.Since(start))
	where := "directory, " + count(n) + " chunks"
	os.RemoveAll(h.cache)

	before := indexFiles(h.t, loc)
	r := h.run(loc, "gc")
	h.add(r, "gc, first run", where, indexDiff(before, indexFiles(h.t, loc)).String()+": merges the export-sized files")

	vol := filepath.Join(h.work, "vol.img")
	h.run(loc, "export", "-q", "--source", writeVolume(h.t, vol, 64<<20), "--volume", "gc-small")
	before = indexFiles(h.t, loc)
	r = h.run(loc, "gc")
	d := indexDiff(before, indexFiles(h.t, loc))
	h.add(r, "gc after one 64 MiB export", where, d.String())
	h.t.Logf("gc after one small export: %s", d)
	// The export before this gc left its index cache: the files gc kept
	// are still in it, so the next export reads only those gc wrote.
	r = h.run(loc, "export", "-q", "--source", writeVolume(h.t, vol, 64<<20), "--volume", "gc-small")
	h.add(r, "export of a 64 MiB volume after that gc", where, "warm cache (left by the export before gc)")
}

// indexFiles returns the size of each index file of the directory
// repository at loc, by name.
func indexFiles(t *testing.T, loc string) map[string]int64 {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(loc, "index"))
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]int64, len(ents))
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = fi.Size()
	}
	return out
}

// indexChange is what a command did to the index files.
type indexChange struct {
	files, kept, replaced, written     int
	bytes, replacedBytes, writtenBytes int64
}

func indexDiff(before, after map[string]int64) indexChange {
	var c indexChange
	for name, size := range before {
		c.files++
		c.bytes += size
		if _, ok := after[name]; ok {
			c.kept++
		} else {
			c.replaced++
			c.replacedBytes += size
		}
	}
	for name, size := range after {
		if _, ok := before[name]; !ok {
			c.written++
			c.writtenBytes += size
		}
	}
	return c
}

func (c indexChange) String() string {
	return fmt.Sprintf("index: %d of %d files (%s of %s) replaced by %d (%s written), %d untouched",
		c.replaced, c.files, units.Bytes(c.replacedBytes), units.Bytes(c.bytes), c.written, units.Bytes(c.writtenBytes), c.kept)
}

func count(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return strconv.Itoa(n)
}

var volumeSeed atomic.Uint64

// writeVolume writes size new random bytes to path and returns it.
func writeVolume(t *testing.T, path string, size int) string {
	t.Helper()
	rng := rand.NewChaCha8([32]byte{byte(volumeSeed.Add(1)), byte(time.Now().UnixNano())})
	b := make([]byte, size)
	rng.Read(b)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// Snapshot repositories: snapshots of 64 GiB volumes (1,024 pages of
// 64 MiB), ten volumes, one snapshot an hour, each page drawn from a pool
// of distinct all-hole pages stored once.
const (
	pagePool     = 4096
	pagesPerSnap = 1024
	volumes      = 10
)

// snapshotRows measures the snapshot commands on a repository of n
// snapshots, on a directory or on S3.
func (h *harness) snapshotRows(n int, onS3 bool) {
	ctx := context.Background()
	where := "directory"
	loc := filepath.Join(h.work, fmt.Sprintf("snaps-%d", n))
	if onS3 {
		where = "S3"
		loc = "s3://" + h.s3.NewBucket(h.t, false) + "/repo"
	}
	if _, err := os.Stat(filepath.Join(loc, "config")); onS3 || err != nil {
		os.RemoveAll(loc)
		h.run(loc, "init")
		start := time.Now()
		h.buildSnapshots(ctx, h.openRepo(ctx, loc), n)
		h.t.Logf("wrote %d snapshots (%s) in %v", n, where, time.Since(start))
	}
	where = fmt.Sprintf("%s, %s snapshots", where, count(n))
	h.add(h.run(loc, "snapshots"), "snapshots", where, "")
	h.add(h.run(loc, "forget", "--dry-run", "--keep-last", "3", "--keep-daily", "7", "--keep-weekly", "4"), "forget --dry-run", where, "keeps 14 of each volume's")
	h.add(h.run(loc, "check"), "check", where, "")
	h.add(h.run(loc, "gc"), "gc", where, "nothing to delete")
}

func (h *harness) buildSnapshots(ctx context.Context, r *repo.Repository, n int) {
	seg := r.Config().Chunking.SegmentSize
	pool := make([]repo.ID, pagePool)
	for k := range pool {
		id, err := r.SavePage(ctx, []repo.Entry{{Hole: true, Length: int64(k + 1)}, {Hole: true, Length: seg - int64(k+1)}})
		if err != nil {
			h.t.Fatal(err)
		}
		pool[k] = id
	}
	if err := r.Flush(ctx); err != nil {
		h.t.Fatal(err)
	}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	g, gctx := safego.WithContext(ctx)
	g.SetLimit(16)
	for i := range n {
		g.Go(func() error {
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			pages := make([]repo.ID, pagesPerSnap)
			for j := range pages {
				pages[j] = pool[rng.IntN(pagePool)]
			}
			s := &repo.Snapshot{Volume: fmt.Sprintf("vol-%02d", i%volumes), Source: "/dev/synthetic", Hostname: "scale",
				Time: base.Add(time.Duration(i) * time.Hour), Tags: map[string]string{"n": strconv.Itoa(i)},
				Size: pagesPerSnap * seg, SegmentSize: seg, Pages: pages,
				Stats: repo.SnapshotStats{ReadBytes: 1 << 30, StoredBytes: 1 << 28, Chunks: 1024, Seconds: 1}}
			return r.SaveSnapshot(gctx, s)
		})
	}
	if err := g.Wait(); err != nil {
		h.t.Fatal(err)
	}
}

// importHoles exports a holes-only volume to S3 and measures its import.
func (h *harness) importHoles() {
	size := os.Getenv("SCALE_HOLES")
	if size == "" {
		size = "4TiB"
	}
	n, err := units.ParseSize(size)
	if err != nil {
		h.t.Fatal(err)
	}
	loc := "s3://" + h.s3.NewBucket(h.t, false) + "/repo"
	h.run(loc, "init")
	src := filepath.Join(h.work, "holes.img")
	os.Remove(src)
	if err := os.WriteFile(src, nil, 0o644); err != nil {
		h.t.Fatal(err)
	}
	if err := os.Truncate(src, n); err != nil {
		h.t.Fatal(err)
	}
	defer os.Remove(src)
	h.add(h.run(loc, "export", "-q", "--source", src, "--volume", "holes"), "export of a holes-only "+size+" volume", "S3", "")
	target := filepath.Join(h.work, "holes-out.img")
	os.Remove(target)
	defer os.Remove(target)
	h.add(h.run(loc, "import", "-q", "--snapshot", "latest:holes", "--target", target), "import of a holes-only "+size+" volume", "S3", "")
}

func (h *harness) table(header string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\n", header)
	b.WriteString("| command | repository | wall | peak RSS | S3 GETs | S3 LISTs | note |\n| --- | --- | --- | --- | --- | --- | --- |\n")
	for _, r := range h.rows {
		gets, lists := "", ""
		if strings.HasPrefix(r.where, "S3") {
			gets, lists = strconv.FormatInt(r.gets, 10), strconv.FormatInt(r.lists, 10)
		}
		fmt.Fprintf(&b, "| %s | %s | %.2f s | %s | %s | %s | %s |\n", r.what, r.where, r.wall.Seconds(), units.Bytes(r.rssKiB<<10), gets, lists, r.note)
	}
	return b.String()
}

// countingProxy is a reverse proxy in front of the S3 server that counts
// object GETs and LISTs (GETs with list-type) of the children.
type countingProxy struct {
	url         string
	gets, lists atomic.Int64
}

func newCountingProxy(t *testing.T, target string) *countingProxy {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &countingProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			if r.URL.Query().Has("list-type") {
				p.lists.Add(1)
			} else {
				p.gets.Add(1)
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	p.url = srv.URL
	return p
}

func (p *countingProxy) reset() { p.gets.Store(0); p.lists.Store(0) }
