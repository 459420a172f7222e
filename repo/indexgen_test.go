package repo_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/blockmover/blockmover/repo"
	"github.com/blockmover/blockmover/repo/repotest"
)

// TestGenerateIndex: a synthetic index opens with exactly the blobs it
// was asked for, in index files of the export's size, naming packs that
// exist.
func TestGenerateIndex(t *testing.T) {
	be, dir := repotest.Dir(t, "")
	r := repotest.Init(t, be, repo.InitOptions{})
	const blobs = 10_000
	err := repo.GenerateIndex(context.Background(), r, repo.GenerateIndexOptions{Blobs: blobs, Seed: 1, PutPack: repotest.DirPut(dir)})
	if err != nil {
		t.Fatal(err)
	}
	r2 := repotest.Open(t, be, repo.Options{})
	if n := r2.IndexLen(); n != blobs {
		t.Fatalf("index holds %d blobs, want %d", n, blobs)
	}
	if w := r2.Warnings(); len(w) > 0 {
		t.Fatalf("warnings: %v", w)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "index", "*"))
	if want := (blobs + 511) / 512; len(files) != want {
		t.Fatalf("%d index files, want %d", len(files), want)
	}
}

// scaleRepo returns a directory repository holding a synthetic index of
// blobs blobs, generated once per size under $BLOCKMOVER_SCALE_DIR (or the
// benchmark's temporary directory).
func scaleRepo(b *testing.B, blobs int) string {
	b.Helper()
	base := os.Getenv("BLOCKMOVER_SCALE_DIR")
	if base == "" {
		base = b.TempDir()
	}
	dir := filepath.Join(base, "index-"+strconv.Itoa(blobs))
	if _, err := os.Stat(filepath.Join(dir, "repo", "config")); err == nil {
		return filepath.Join(dir, "repo")
	}
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		b.Fatal(err)
	}
	be, rdir := repotest.Dir(b, dir)
	r := repotest.Init(b, be, repo.InitOptions{})
	t0 := time.Now()
	if err := repo.GenerateIndex(context.Background(), r, repo.GenerateIndexOptions{Blobs: blobs, Seed: 1, PutPack: repotest.DirPut(rdir)}); err != nil {
		b.Fatal(err)
	}
	b.Logf("generated %d blobs in %v", blobs, time.Since(t0))
	return rdir
}

// BenchmarkOpenIndex opens a directory repository with a synthetic index
// of 1M blobs (and 10M with BLOCKMOVER_SCALE=1; skipped with -short) in
// the export's layout: 16 blobs a pack, 32 packs an index file; without
// the local index cache, and with a warm one. It reports the index file
// bytes per second, the heap bytes retained per blob, and the time per
// blob.
func BenchmarkOpenIndex(b *testing.B) {
	sizes := []int{1 << 20}
	if os.Getenv("BLOCKMOVER_SCALE") != "" && !testing.Short() {
		sizes = append(sizes, 10<<20)
	}
	for _, n := range sizes {
		for _, cache := range []string{"none", "warm"} {
			b.Run(fmt.Sprintf("blobs=%dMi/cache=%s", n>>20, cache), func(b *testing.B) {
				benchOpen(b, n, cache == "warm")
			})
		}
	}
}

func benchOpen(b *testing.B, n int, warm bool) {
	dir := scaleRepo(b, n)
	var indexBytes int64
	files, _ := filepath.Glob(filepath.Join(dir, "index", "*"))
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			indexBytes += fi.Size()
		}
	}
	be := repotest.OpenDir(b, dir)
	opts := repo.Options{}
	if warm {
		opts.IndexCache = filepath.Join(filepath.Dir(dir), "cache")
		r, err := repo.Open(context.Background(), be, repotest.Password(), opts)
		if err != nil {
			b.Fatal(err)
		}
		r.Close()
	}
	b.SetBytes(indexBytes)
	var retained uint64
	for b.Loop() {
		before := heapBytes()
		r, err := repo.Open(context.Background(), be, repotest.Password(), opts)
		if err != nil {
			b.Fatal(err)
		}
		if r.IndexLen() != n {
			b.Fatalf("index holds %d blobs, want %d", r.IndexLen(), n)
		}
		if st := r.IndexStats(); warm && st.Read > 0 {
			b.Fatalf("warm cache, yet %d index files read", st.Read)
		}
		retained = heapBytes() - before
		runtime.KeepAlive(r)
		r.Close()
	}
	b.ReportMetric(float64(retained)/float64(n), "B/chunk")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/chunk")
}

func heapBytes() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
