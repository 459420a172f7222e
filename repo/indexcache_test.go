package repo

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/mem"
)

// Tests of the local index cache: it gives the same index as reading every
// index file, reads only the files it lacks, and is never trusted when its
// files are gone, it is damaged, or it is another repository's.

// cachedOpen opens be with the index cache in dir and returns the
// repository and where its index came from.
func cachedOpen(t *testing.T, be backend.Backend, dir string) (*Repository, IndexStats) {
	t.Helper()
	r := reopen(t, be, Options{IndexCache: dir})
	return r, r.IndexStats()
}

// sameIndex fails unless a and b index the same blobs at the same places.
func sameIndex(t *testing.T, a, b *Repository) {
	t.Helper()
	if a.IndexLen() != b.IndexLen() {
		t.Fatalf("index of %d blobs, want %d", a.IndexLen(), b.IndexLen())
	}
	n := 0
	b.idx.each(func(want BlobRef) error {
		got, ok := a.Lookup(want.ID)
		if !ok || got != want {
			t.Fatalf("blob %s: %v %+v, want %+v", want.ID.Short(), ok, got, want)
		}
		n++
		return nil
	})
	if n != a.IndexLen() {
		t.Fatalf("each visited %d blobs of %d", n, a.IndexLen())
	}
}

func indexFiles(t *testing.T, be backend.Backend) []string {
	t.Helper()
	r := reopen(t, be, Options{NoIndex: true})
	names, err := r.listIndexFiles(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// TestIndexCacheReadsOnlyNewFiles: a warm cache reads no index file; an
// index files that another writer added since are the only ones read,
// and their blobs are found.
func TestIndexCacheReadsOnlyNewFiles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	r, be := newTestRepo(t)
	if err := GenerateIndex(ctx, r, GenerateIndexOptions{Blobs: 5000, BlobsPerPack: 10, PacksPerFile: 10, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	files := len(indexFiles(t, be))
	cold, st := cachedOpen(t, be, dir)
	if st.Read != files || st.Cached != 0 {
		t.Fatalf("cold open: %+v, want %d files read", st, files)
	}
	if _, err := os.Stat(filepath.Join(dir, r.RepoID().String())); err != nil {
		t.Fatalf("no cache file written: %v (%v)", err, cold.CacheNotes())
	}
	warm, st := cachedOpen(t, be, dir)
	if st.Read != 0 || st.Cached != files {
		t.Fatalf("warm open: %+v, want all %d files from the cache", st, files)
	}
	sameIndex(t, warm, reopen(t, be, Options{}))

	// Another writer adds blobs: real packs, and a new index file.
	other := reopen(t, be, Options{})
	s := writeVolume(t, other, "other", 1, 5)
	// (It publishes its first pack's index file at once, see refresh.go.)
	wrote := len(other.writtenIndexFiles())
	next, st := cachedOpen(t, be, dir)
	if st.Read != wrote || st.Cached != files {
		t.Fatalf("open after another writer: %+v, want the %d files it wrote read and %d cached", st, wrote, files)
	}
	loadAll(t, next, s)
	sameIndex(t, next, reopen(t, be, Options{}))
	if n := len(next.CacheNotes()); n != 0 {
		t.Fatalf("cache notes: %v", next.CacheNotes())
	}
}

// TestIndexCacheAfterGC: gc repacks, deletes packs and replaces index
// files; an open with the cache written before gives exactly the index a
// fresh load gives, never an entry whose index file is gone, and every
// remaining snapshot reads.
func TestIndexCacheAfterGC(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	be := mem.New()
	r, err := Init(ctx, be, testPassword, InitOptions{KDF: testKDF, PackSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var snaps []*Snapshot
	for i := range 12 {
		snaps = append(snaps, writeVolume(t, r, "v", i, 8))
	}
	warm, _ := cachedOpen(t, be, dir)
	gone := map[ID]bool{}
	for _, s := range snaps[:6] {
		entries, err := warm.LoadPage(ctx, warm.NewBlobOpener(), s, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			gone[e.ID] = true
		}
		if err := r.DeleteSnapshot(ctx, s.ID); err != nil {
			t.Fatal(err)
		}
	}
	before := indexFiles(t, be)
	res, err := reopen(t, be, Options{}).GC(ctx, GCOptions{Grace: 0})
	if err != nil {
		t.Fatal(err)
	}
	if res.Deleted == 0 {
		t.Fatalf("gc deleted nothing: %+v", res)
	}
	after := indexFiles(t, be)
	kept := 0
	for _, f := range before {
		if strings.Contains(strings.Join(after, " "), f) {
			kept++
		}
	}
	if kept == len(before) {
		t.Fatal("gc replaced no index file")
	}
	got, st := cachedOpen(t, be, dir)
	t.Logf("gc %+v; index files %d → %d; open: %+v", res, len(before), len(after), st)
	sameIndex(t, got, reopen(t, be, Options{}))
	for id := range gone {
		if ref, ok := got.Lookup(id); ok {
			if _, err := be.Stat(ctx, PackKey(ref.Pack)); err != nil {
				t.Fatalf("blob %s of a forgotten snapshot found in pack %s: %v", id.Short(), ref.Pack.Short(), err)
			}
		}
	}
	for _, s := range snaps[6:] {
		loadAll(t, got, s)
	}
	if w := got.Warnings(); len(w) > 0 {
		t.Fatalf("warnings: %v", w)
	}
}

// TestIndexCacheNeverTrusted: a damaged cache file, a truncated one, and
// one of another repository are not used; the open reads every index file
// and writes a good cache.
func TestIndexCacheNeverTrusted(t *testing.T) {
	ctx := context.Background()
	r, be := newTestRepo(t)
	if err := GenerateIndex(ctx, r, GenerateIndexOptions{Blobs: 3000, BlobsPerPack: 10, PacksPerFile: 10, Seed: 4}); err != nil {
		t.Fatal(err)
	}
	files := len(indexFiles(t, be))
	fresh := reopen(t, be, Options{})
	other, otherBe := newTestRepo(t)
	if err := GenerateIndex(ctx, other, GenerateIndexOptions{Blobs: 100, Seed: 5}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		spoil func(t *testing.T, path string)
	}{
		{"one bit flipped in the entries", func(t *testing.T, path string) { flipFile(t, path, 1000) }},
		{"one bit flipped in the pack table", func(t *testing.T, path string) {
			fi, _ := os.Stat(path)
			flipFile(t, path, fi.Size()-cacheFooter-cacheMACSize-100)
		}},
		{"truncated", func(t *testing.T, path string) {
			fi, _ := os.Stat(path)
			if err := os.Truncate(path, fi.Size()/2); err != nil {
				t.Fatal(err)
			}
		}},
		{"empty", func(t *testing.T, path string) { os.WriteFile(path, nil, 0o600) }},
		{"another repository's", func(t *testing.T, path string) {
			odir := t.TempDir()
			cachedOpen(t, otherBe, odir)
			b, err := os.ReadFile(filepath.Join(odir, other.RepoID().String()))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"another repository's, relabelled", func(t *testing.T, path string) {
			odir := t.TempDir()
			cachedOpen(t, otherBe, odir)
			b, err := os.ReadFile(filepath.Join(odir, other.RepoID().String()))
			if err != nil {
				t.Fatal(err)
			}
			// The footer names this repository; the MAC, keyed by the
			// other's key, must still fail.
			id := r.RepoID()
			copy(b[len(b)-cacheFooter-cacheMACSize+16:], id[:])
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			cachedOpen(t, be, dir)
			c.spoil(t, filepath.Join(dir, r.RepoID().String()))
			got, st := cachedOpen(t, be, dir)
			if st.Read != files || len(got.CacheNotes()) != 1 {
				t.Fatalf("open: %+v, notes %v; want every file read and the cache refused", st, got.CacheNotes())
			}
			t.Logf("refused: %v", got.CacheNotes()[0])
			sameIndex(t, got, fresh)
			again, st := cachedOpen(t, be, dir)
			if st.Read != 0 {
				t.Fatalf("the cache was not rebuilt: %+v, %v", st, again.CacheNotes())
			}
			sameIndex(t, again, fresh)
		})
	}
}

func flipFile(t *testing.T, path string, off int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 1
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestIndexCacheMissingPack: a pack lost behind the index's back (not
// deleted by gc) is left out, with the warning a fresh load gives, by
// every open that lists the packs: once the cache's pack list is older
// than cacheRelist; from then on every open, as the file naming it is left
// out of the cache. Before that, a warm open lists no pack and does not
// notice (indexcache.go).
func TestIndexCacheMissingPack(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	r, be := newTestRepo(t)
	s := writeVolume(t, r, "v", 1, 20)
	cachedOpen(t, be, dir)
	victim := packOf(t, r, s)
	if err := be.Delete(ctx, PackKey(victim)); err != nil {
		t.Fatal(err)
	}
	if got, _ := cachedOpen(t, be, dir); len(got.Warnings()) != 0 {
		t.Fatalf("a warm open listed the packs: %v", got.Warnings())
	}
	for _, relist := range []time.Duration{time.Nanosecond, 0, 0} {
		got := reopen(t, be, Options{IndexCache: dir, cacheRelist: relist})
		if len(got.Warnings()) != 1 || !strings.Contains(got.Warnings()[0].Error(), "do not exist") {
			t.Fatalf("warnings %v, want the missing pack", got.Warnings())
		}
		if _, ok := got.Lookup(s.Pages[0]); ok {
			if ref, _ := got.Lookup(s.Pages[0]); ref.Pack == victim {
				t.Fatal("an entry of the missing pack is used")
			}
		}
		sameIndex(t, got, reopen(t, be, Options{}))
	}
}

// TestIndexCacheConcurrentWriters: processes opening at once all write
// the cache (through a temporary file and a rename); each sees a whole
// index, no temporary file is left, and the cache that stays is good.
func TestIndexCacheConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	r, be := newTestRepo(t)
	if err := GenerateIndex(ctx, r, GenerateIndexOptions{Blobs: 20_000, Seed: 6}); err != nil {
		t.Fatal(err)
	}
	fresh := reopen(t, be, Options{})
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 3 {
				got, err := Open(ctx, be, testPassword, Options{IndexCache: dir})
				if err != nil {
					t.Error(err)
					return
				}
				if got.IndexLen() != fresh.IndexLen() || len(got.CacheNotes()) > 0 {
					t.Errorf("index of %d blobs, want %d; notes %v", got.IndexLen(), fresh.IndexLen(), got.CacheNotes())
				}
				got.Close()
				time.Sleep(time.Millisecond)
				// Make the cache stale for the next one.
				os.Remove(filepath.Join(dir, r.RepoID().String()))
			}
		}()
	}
	wg.Wait()
	cachedOpen(t, be, dir)
	got, st := cachedOpen(t, be, dir)
	if st.Read != 0 {
		t.Fatalf("after the race: %+v", st)
	}
	sameIndex(t, got, fresh)
	left, _ := filepath.Glob(filepath.Join(dir, ".tmp-*"))
	if len(left) > 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

// TestIndexCacheFileReplaced: with the cache warm, one index file is
// deleted and another is replaced by a file naming half of its packs (what
// gc's compaction does): blobs whose packs no listed file names are never
// found, the others are, and only the new file is read.
func TestIndexCacheFileReplaced(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	r, be := newTestRepo(t)
	if err := GenerateIndex(ctx, r, GenerateIndexOptions{Blobs: 4000, BlobsPerPack: 10, PacksPerFile: 10, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	files := indexFiles(t, be)
	cachedOpen(t, be, dir)
	dropped, err := r.readIndexFile(ctx, files[0])
	if err != nil {
		t.Fatal(err)
	}
	halved, err := r.readIndexFile(ctx, files[1])
	if err != nil {
		t.Fatal(err)
	}
	data := seal(r.aead, nil, encodeIndex(halved[:5]), []byte(aadIndex))
	if err := be.Put(ctx, indexPrefix+fileID(data).String(), data); err != nil {
		t.Fatal(err)
	}
	for _, f := range files[:2] {
		if err := be.Delete(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	got, st := cachedOpen(t, be, dir)
	if st.Read != 1 || st.Cached != len(files)-2 {
		t.Fatalf("open: %+v, want 1 file read and %d cached", st, len(files)-2)
	}
	sameIndex(t, got, reopen(t, be, Options{}))
	for i, p := range append(dropped, halved...) {
		found := i >= len(dropped) && i-len(dropped) < 5
		for _, b := range p.Blobs {
			if _, ok := got.Lookup(b.ID); ok != found {
				t.Fatalf("blob %s of pack %d: found %v, want %v", b.ID.Short(), i, ok, found)
			}
		}
	}
	if got.IndexLen() != 4000-150 {
		t.Fatalf("index of %d blobs, want %d", got.IndexLen(), 4000-150)
	}
}

// TestIndexEstimateBeforeLoad: Options.IndexEstimate is called before any
// index file is read (so a memory limit is in force for the load), with a
// bound no lower than the blobs the index then holds, with and without a
// cache.
func TestIndexEstimateBeforeLoad(t *testing.T) {
	ctx := context.Background()
	r, mbe := newTestRepo(t)
	if err := GenerateIndex(ctx, r, GenerateIndexOptions{Blobs: 7000, BlobsPerPack: 10, PacksPerFile: 10, Seed: 8}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var gets int
	be := backend.NewObserve(mbe, func(e backend.RequestEvent) {
		if e.Op == backend.OpGet && strings.HasPrefix(e.Key, indexPrefix) {
			mu.Lock()
			gets++
			mu.Unlock()
		}
	})
	dir := t.TempDir()
	for _, cache := range []string{"", dir, dir} {
		mu.Lock()
		gets = 0
		mu.Unlock()
		calls, bound, readBefore := 0, 0, -1
		got, err := Open(ctx, be, testPassword, Options{IndexCache: cache, IndexEstimate: func(cfg Config, blobs int) {
			mu.Lock()
			defer mu.Unlock()
			calls, bound, readBefore = calls+1, blobs, gets
		}})
		if err != nil {
			t.Fatal(err)
		}
		defer got.Close()
		t.Logf("cache %q: estimate %d for %d blobs; %d index files read, none before", cache, bound, got.IndexLen(), gets)
		if calls != 1 || readBefore != 0 || bound < got.IndexLen() || bound > 2*got.IndexLen() {
			t.Fatalf("estimate called %d times, after %d index reads, bound %d for %d blobs", calls, readBefore, bound, got.IndexLen())
		}
	}
}

// TestIndexCacheRepairedPack: a repair that keeps only some blobs of a
// pack writes a file naming it with fewer blobs; the cache, which holds
// all of them, is then not used, and the dropped blob is not found.
func TestIndexCacheRepairedPack(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	r, be := newTestRepo(t)
	if err := GenerateIndex(ctx, r, GenerateIndexOptions{Blobs: 400, BlobsPerPack: 10, PacksPerFile: 10, Seed: 9}); err != nil {
		t.Fatal(err)
	}
	files := indexFiles(t, be)
	cachedOpen(t, be, dir)
	recs, err := r.readIndexFile(ctx, files[0])
	if err != nil {
		t.Fatal(err)
	}
	dropped := recs[0].Blobs[3].ID
	recs[0].Blobs = append(recs[0].Blobs[:3:3], recs[0].Blobs[4:]...)
	data := seal(r.aead, nil, encodeIndex(recs), []byte(aadIndex))
	if err := be.Put(ctx, indexPrefix+fileID(data).String(), data); err != nil {
		t.Fatal(err)
	}
	if err := be.Delete(ctx, files[0]); err != nil {
		t.Fatal(err)
	}
	got, st := cachedOpen(t, be, dir)
	if len(got.CacheNotes()) != 1 || !strings.Contains(got.CacheNotes()[0].Error(), "disagree") || st.Read != len(files) {
		t.Fatalf("open %+v, notes %v: want the cache refused and every file read", st, got.CacheNotes())
	}
	if _, ok := got.Lookup(dropped); ok {
		t.Fatal("a blob the repair dropped is still found")
	}
	sameIndex(t, got, reopen(t, be, Options{}))
	if _, st := cachedOpen(t, be, dir); st.Read != 0 {
		t.Fatalf("the cache was not rebuilt: %+v", st)
	}
}
