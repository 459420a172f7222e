package mover_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/blockmover/blockmover/bench"
	"github.com/blockmover/blockmover/chunk"
	"github.com/blockmover/blockmover/mover"
	"github.com/blockmover/blockmover/repo"
)

func exportPath(t testing.TB, r *repo.Repository, path, volume string, opts mover.ExportOptions) *mover.ExportResult {
	t.Helper()
	src, err := mover.OpenSource(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	opts.Volume = volume
	opts.Source = path
	res, err := mover.Export(context.Background(), src, r, opts)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func importPath(t testing.TB, r *repo.Repository, snap *repo.Snapshot, path string, opts mover.ImportOptions) *mover.ImportResult {
	t.Helper()
	dst, err := mover.OpenTarget(path, snap.Size, mover.TargetOptions{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	res, err := mover.Import(context.Background(), r, snap, dst, opts)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestRoundTripLoopDevices is the core issue's first promise: a 1 GiB device
// of zeros, random data, repeated data and real file data, exported and
// imported onto another device full of old random bytes, byte-identical.
// Then a second export of the unchanged device stores < 1% of its size,
// and the same bytes under another volume name dedup too.
func TestRoundTripLoopDevices(t *testing.T) {
	if testing.Short() {
		t.Skip("1 GiB round trip skipped in -short mode")
	}
	const size = 1 << 30
	spec := bench.Spec{Size: size, Seed: 1, Zero: 0.25, File: 0.25, Duplicate: 0.25, RegionSize: 16 << 20}
	src := loopDevice(t, size)
	fillVolume(t, src, spec)
	dst := loopDevice(t, size)
	fillRandom(t, dst, size, 99)

	r, dir := testRepo(t, nil)
	res := exportPath(t, r, src, "vol-a", mover.ExportOptions{})
	t.Logf("export: read %d zero %d new %d stored %d in %v", res.ReadBytes, res.ZeroBytes, res.NewBytes, res.StoredBytes, res.Duration)
	if res.ZeroBytes < size/5 {
		t.Errorf("only %d zero bytes found in a volume with 25%% zeros", res.ZeroBytes)
	}
	// Half the volume is unique data; the duplicated quarter may add only
	// the chunks that cross region edges and rotation points.
	if limit := int64(size/2 + size/4*3/10); res.NewBytes > limit {
		t.Errorf("new bytes %d > %d: duplicates were not deduplicated", res.NewBytes, limit)
	}

	r2 := openRepo(t, dir)
	snap, err := r2.FindSnapshot(context.Background(), "latest:vol-a")
	if err != nil {
		t.Fatal(err)
	}
	ires := importPath(t, r2, snap, dst, mover.ImportOptions{})
	t.Logf("import: written %d zeroed %d fetched %d in %v", ires.WrittenBytes, ires.ZeroedBytes, ires.FetchedBytes, ires.Duration)
	if hashFile(t, src, size) != hashFile(t, dst, size) {
		t.Fatal("imported device differs from the source")
	}

	again := exportPath(t, r2, src, "vol-a", mover.ExportOptions{})
	if again.StoredBytes >= size/100 {
		t.Errorf("second export of an unchanged device stored %d bytes (≥ 1%%)", again.StoredBytes)
	}
	if again.Snapshot.Pages[0] != res.Snapshot.Pages[0] {
		t.Error("unchanged device gave different pages")
	}
	other := exportPath(t, r2, dst, "vol-b", mover.ExportOptions{})
	if other.StoredBytes >= size/100 {
		t.Errorf("export of a copy under another name stored %d bytes (≥ 1%%)", other.StoredBytes)
	}
	chk, err := r2.Check(context.Background(), repo.CheckOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	if !chk.OK() {
		t.Fatalf("check: %v", chk.Problems)
	}
}

// TestWorkerCountInvariance: the chunk list never depends on the number
// of workers, uploads or the read size.
func TestWorkerCountInvariance(t *testing.T) {
	const size = 96 << 20
	path := filepath.Join(t.TempDir(), "vol.img")
	os.WriteFile(path, nil, 0o600)
	os.Truncate(path, size)
	fillVolume(t, path, bench.Spec{Size: size, Seed: 5, Zero: 0.2, File: 0.4, Duplicate: 0.2, RegionSize: 1 << 20})
	// One repository, so chunk and page IDs (keyed per repository) compare.
	r, _ := testRepo(t, func(p *chunk.Params) { p.SegmentSize = 16 << 20 })
	var want []repo.ID
	for _, w := range []int{1, 2, 8} {
		res := exportPath(t, r, path, "v", mover.ExportOptions{Workers: w, Uploads: w, ReadSize: 1 << (18 + w)})
		if want == nil {
			want = res.Snapshot.Pages
			continue
		}
		for i := range want {
			if res.Snapshot.Pages[i] != want[i] {
				t.Fatalf("%d workers: page %d differs", w, i)
			}
		}
	}
}

// TestImportFileTargets covers regular-file targets: a new file (holes
// left as holes), an existing file full of old data (holes punched), and
// the fixed-size splitter.
func TestImportFileTargets(t *testing.T) {
	const size = 40<<20 + 12345 // not a multiple of any block size
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	os.WriteFile(src, nil, 0o600)
	os.Truncate(src, size)
	fillVolume(t, src, bench.Spec{Size: size, Seed: 3, Zero: 0.4, File: 0.3, RegionSize: 1 << 20})
	for _, splitter := range []chunk.Splitter{chunk.CDC, chunk.Fixed} {
		t.Run(string(splitter), func(t *testing.T) {
			r, _ := testRepo(t, func(p *chunk.Params) {
				if splitter == chunk.Fixed {
					p.Splitter, p.FixedSize = chunk.Fixed, 1<<20
				}
			})
			res := exportPath(t, r, src, "v", mover.ExportOptions{})
			fresh := filepath.Join(t.TempDir(), "fresh.img")
			importPath(t, r, res.Snapshot, fresh, mover.ImportOptions{})
			used := filepath.Join(t.TempDir(), "used.img")
			os.WriteFile(used, nil, 0o600)
			os.Truncate(used, size+999)
			fillRandom(t, used, size+999, 7)
			importPath(t, r, res.Snapshot, used, mover.ImportOptions{})
			want := hashFile(t, src, size)
			for _, p := range []string{fresh, used} {
				if got := hashFile(t, p, size); got != want {
					t.Fatalf("%s differs from the source", filepath.Base(p))
				}
				if fi, _ := os.Stat(p); fi.Size() != size {
					t.Fatalf("%s is %d bytes, want %d", filepath.Base(p), fi.Size(), size)
				}
			}
		})
	}
}

// TestSparseFileHolesNotRead: holes of a sparse source file are never read.
func TestSparseFileHolesNotRead(t *testing.T) {
	const size = 512 << 20
	path := filepath.Join(t.TempDir(), "sparse.img")
	f, _ := os.Create(path)
	f.Truncate(size)
	data := make([]byte, 3<<20)
	for i := range data {
		data[i] = byte(i*7 + 1)
	}
	f.WriteAt(data, 100<<20)
	f.Close()
	r, _ := testRepo(t, nil)
	dev, err := mover.OpenSource(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	res, err := mover.Export(context.Background(), dev, r, mover.ExportOptions{Volume: "sparse"})
	if err != nil {
		t.Fatal(err)
	}
	if dev.ReadBytes() > 8<<20 {
		t.Fatalf("read %d bytes of a file with 3 MiB of data", dev.ReadBytes())
	}
	if res.ReadBytes != dev.ReadBytes() {
		t.Fatalf("result says %d bytes read, the device saw %d", res.ReadBytes, dev.ReadBytes())
	}
}

// shrinkingSource truncates its file while the export reads it.
type shrinkingSource struct {
	*mover.Device
	path string
	done atomic.Bool
}

func (s *shrinkingSource) ReadAt(p []byte, off int64) (int, error) {
	if s.done.CompareAndSwap(false, true) {
		os.Truncate(s.path, s.Size()+4096)
	}
	return s.Device.ReadAt(p, off)
}

type shortSource struct{ size int64 }

func (s shortSource) Size() int64 { return s.size }
func (s shortSource) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > s.size/2 {
		return 0, io.ErrUnexpectedEOF
	}
	clear(p)
	p[0] = 1
	return len(p), nil
}

func TestExportBadSources(t *testing.T) {
	r, _ := testRepo(t, nil)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v.img")
	os.WriteFile(path, make([]byte, 8<<20), 0o600)
	fillRandom(t, path, 8<<20, 1)

	dev, err := mover.OpenSource(path, false)
	if err != nil {
		t.Fatal(err)
	}
	_, err = mover.Export(ctx, &shrinkingSource{Device: dev, path: path}, r, mover.ExportOptions{Volume: "v"})
	if err == nil || !strings.Contains(err.Error(), "changed size") {
		t.Fatalf("resized source: %v", err)
	}
	dev.Close()

	_, err = mover.Export(ctx, shortSource{size: 8 << 20}, r, mover.ExportOptions{Volume: "v"})
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated source: %v", err)
	}
	if _, err := mover.OpenSource(filepath.Join(t.TempDir(), "missing"), false); err == nil {
		t.Fatal("opened a missing source")
	}
	if _, err := mover.OpenSource(t.TempDir(), false); !errors.Is(err, mover.ErrNotVolume) {
		t.Fatalf("directory as source: %v", err)
	}
	if _, err := mover.Export(ctx, shortSource{size: 8 << 20}, r, mover.ExportOptions{}); err == nil {
		t.Fatal("export without a volume name")
	}
	snaps, err := r.Snapshots(ctx)
	if err != nil || len(snaps) != 0 {
		t.Fatalf("failed exports left snapshots: %d %v", len(snaps), err)
	}
	chk, err := r.Check(ctx, repo.CheckOptions{ReadData: true})
	if err != nil || !chk.OK() {
		t.Fatalf("check after failed exports: %v %v", chk, err)
	}
}

func TestImportTargetTooSmall(t *testing.T) {
	r, _ := testRepo(t, nil)
	path := filepath.Join(t.TempDir(), "v.img")
	os.WriteFile(path, nil, 0o600)
	os.Truncate(path, 4<<20)
	fillRandom(t, path, 4<<20, 2)
	res := exportPath(t, r, path, "v", mover.ExportOptions{})
	dev := loopDevice(t, 2<<20)
	if _, err := mover.OpenTarget(dev, res.Snapshot.Size, mover.TargetOptions{}); err == nil && strings.HasPrefix(dev, "/dev/") {
		t.Fatal("a 2 MiB device accepted a 4 MiB snapshot")
	}
}

// cancellingStore cancels the export's context once after packs were
// saved, as a pod's SIGTERM would in the middle of a volume, and counts
// the plaintext bytes of every pack saved.
type cancellingStore struct {
	*repo.Repository
	after  int64
	packs  atomic.Int64
	plain  atomic.Int64
	cancel context.CancelFunc
}

func (c *cancellingStore) SavePack(ctx context.Context, p *repo.Pack) error {
	var plain int64
	for _, b := range p.Blobs {
		plain += int64(b.RawLength)
	}
	if err := c.Repository.SavePack(ctx, p); err != nil {
		return err
	}
	c.plain.Add(plain)
	if c.packs.Add(1) == c.after {
		c.cancel()
	}
	return nil
}

// TestExportCancelledIndexesUploads: an export cancelled midway indexes the
// packs it uploaded, so the rerun stores only what they did not hold.
func TestExportCancelledIndexesUploads(t *testing.T) {
	const size = 96 << 20
	r, dir := testRepo(t, nil)
	path := filepath.Join(t.TempDir(), "v.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	fillRandom(t, path, size, 3)
	dev, err := mover.OpenSource(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Small packs; the cancellation comes after 12 of them, fewer than
	// an index checkpoint: only the salvage indexes them.
	st := &cancellingStore{Repository: r, after: 12, cancel: cancel}
	opts := mover.ExportOptions{Volume: "v", PackSize: 2 << 20}
	if _, err := mover.Export(ctx, dev, st, opts); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled export: %v", err)
	}
	saved := st.plain.Load()
	if saved < 12*(2<<20) || saved >= size {
		t.Fatalf("the cancelled export saved %d bytes in %d packs", saved, st.packs.Load())
	}
	r2 := openRepo(t, dir)
	if snaps, _ := r2.Snapshots(context.Background()); len(snaps) != 0 {
		t.Fatalf("a cancelled export left %d snapshots", len(snaps))
	}
	res, err := mover.Export(context.Background(), dev, r2, opts)
	if err != nil {
		t.Fatal(err)
	}
	// Random data: every chunk in a saved pack is found, no other.
	if res.NewBytes > size-saved {
		t.Fatalf("rerun stored %d new bytes of %d, %d were in saved packs: the cancelled export's uploads were not indexed", res.NewBytes, size, saved)
	}
	chk, err := r2.Check(context.Background(), repo.CheckOptions{ReadData: true})
	if err != nil || !chk.OK() {
		t.Fatalf("check after a cancelled export: %v %v", chk, err)
	}
}

// watchedTarget wraps a Device: it counts StartWriteback calls and the
// most WriteAt calls it saw at once.
type watchedTarget struct {
	*mover.Device
	writebacks       atomic.Int64
	inWrite, maxSeen atomic.Int64
}

func (w *watchedTarget) StartWriteback() error {
	w.writebacks.Add(1)
	return w.Device.StartWriteback()
}

func (w *watchedTarget) WriteAt(p []byte, off int64) (int, error) {
	n := w.inWrite.Add(1)
	defer w.inWrite.Add(-1)
	for m := w.maxSeen.Load(); n > m && !w.maxSeen.CompareAndSwap(m, n); m = w.maxSeen.Load() {
	}
	return w.Device.WriteAt(p, off)
}

// TestImportWriters: through the page cache the download workers write
// their own chunks, never two writes at once (the writers only zero holes
// beside them), and ask the target to start writing back as they go;
// several writers change neither.
func TestImportWriters(t *testing.T) {
	const size = 80 << 20 // more than one writeback interval of random data
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	os.WriteFile(src, nil, 0o600)
	os.Truncate(src, size)
	fillRandom(t, src, size, 11)
	r, _ := testRepo(t, nil)
	res := exportPath(t, r, src, "v", mover.ExportOptions{})
	want := hashFile(t, src, size)
	for _, writers := range []int{0, 3} {
		path := filepath.Join(t.TempDir(), "dst.img")
		d, err := mover.OpenTarget(path, size, mover.TargetOptions{Create: true})
		if err != nil {
			t.Fatal(err)
		}
		dst := &watchedTarget{Device: d}
		_, err = mover.Import(context.Background(), r, res.Snapshot, dst, mover.ImportOptions{Writers: writers, Downloads: 4, Buffered: true})
		d.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got := hashFile(t, path, size); got != want {
			t.Fatalf("%d writers: target differs from the source", writers)
		}
		if m := dst.maxSeen.Load(); m != 1 {
			t.Errorf("%d writers: %d writes at once, want 1", writers, m)
		}
		if dst.writebacks.Load() == 0 {
			t.Errorf("%d writers: no writeback was started", writers)
		}
	}
}
