package mover_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/blockmover/blockmover/bench"
	"github.com/blockmover/blockmover/chunk"
	"github.com/blockmover/blockmover/mover"
	"github.com/blockmover/blockmover/repo"
)

// TestImportDirect: where the target can be written around the page cache
// (a block device, a file on a disk), the aligned middle of every chunk is
// written with O_DIRECT and the partial blocks at its ends through the
// page cache, and the bytes are the same as the source's: chunks that
// start anywhere, chunks written at several offsets of different phase
// (duplicates), holes on a fresh and on a used target, and a size that is
// not a multiple of any block.
func TestImportDirect(t *testing.T) {
	const size = 48<<20 + 12345
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	os.WriteFile(src, nil, 0o600)
	os.Truncate(src, size)
	fillVolume(t, src, bench.Spec{Size: size, Seed: 8, Zero: 0.3, File: 0.2, Duplicate: 0.3, RegionSize: 1 << 20})
	r, _ := testRepo(t, func(p *chunk.Params) { p.MinSize, p.AvgSize, p.MaxSize = 16<<10, 64<<10, 256<<10 })
	snap := exportPath(t, r, src, "v", mover.ExportOptions{}).Snapshot
	want := hashFile(t, src, size)
	dups := 0
	for i := range snap.Pages {
		seen := map[repo.ID]bool{}
		entries, err := r.LoadPage(context.Background(), &repo.BlobOpener{}, snap, i)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if !e.Hole && seen[e.ID] {
				dups++
			}
			seen[e.ID] = true
		}
	}
	if dups == 0 {
		t.Fatal("the volume has no chunk at two offsets: the test would not cover out-of-phase writes")
	}

	used := filepath.Join(t.TempDir(), "used.img")
	os.WriteFile(used, nil, 0o600)
	os.Truncate(used, size)
	fillRandom(t, used, size, 5)
	targets := []struct {
		name, path string
		device     bool
	}{
		{"fresh file", filepath.Join(t.TempDir(), "fresh.img"), false},
		{"used file", used, false},
		{"used block device", loopDevice(t, 50<<20), true},
	}
	fillRandom(t, targets[2].path, 50<<20, 6)
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			dst, err := mover.OpenTarget(tg.path, size, mover.TargetOptions{Create: true})
			if err != nil {
				t.Fatal(err)
			}
			defer dst.Close()
			direct := true
			if df, err := dst.OpenDirect(); err != nil {
				if tg.device && dst.IsBlockDevice() || !errors.Is(err, mover.ErrNoDirect) {
					t.Fatalf("OpenDirect: %v", err)
				}
				t.Logf("no direct I/O on %s (%v): the import writes through the page cache", tg.path, err)
				direct = false
			} else {
				df.Close()
			}
			res, err := mover.Import(context.Background(), r, snap, dst, mover.ImportOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := hashFile(t, tg.path, size); got != want {
				t.Fatal("the target differs from the source")
			}
			t.Logf("written %d, of which direct %d; zeroed %d", res.WrittenBytes, res.DirectBytes, res.ZeroedBytes)
			switch {
			case direct && res.DirectBytes < res.WrittenBytes*9/10:
				t.Errorf("only %d of %d bytes written directly", res.DirectBytes, res.WrittenBytes)
			case !direct && res.DirectBytes != 0:
				t.Errorf("%d bytes written directly to a target that cannot be", res.DirectBytes)
			}
		})
	}
}

// TestImportBuffered: ImportOptions.Buffered keeps every write in the page
// cache, with the same bytes.
func TestImportBuffered(t *testing.T) {
	const size = 8<<20 + 1000
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	os.WriteFile(src, nil, 0o600)
	os.Truncate(src, size)
	fillVolume(t, src, bench.Spec{Size: size, Seed: 9, Zero: 0.3, Duplicate: 0.3, RegionSize: 1 << 20})
	r, _ := testRepo(t, nil)
	snap := exportPath(t, r, src, "v", mover.ExportOptions{}).Snapshot
	out := loopDevice(t, 9<<20)
	res := importPath(t, r, snap, out, mover.ImportOptions{Buffered: true})
	if res.DirectBytes != 0 {
		t.Errorf("Buffered: %d bytes written directly", res.DirectBytes)
	}
	if hashFile(t, out, size) != hashFile(t, src, size) {
		t.Fatal("the target differs from the source")
	}
}

// TestOpenDirectTmpfs: a file in memory is not written directly (it would
// copy into memory all the same).
func TestOpenDirectTmpfs(t *testing.T) {
	dir, err := os.MkdirTemp("/dev/shm", "mover-direct-")
	if err != nil {
		t.Skipf("no /dev/shm: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	d, err := mover.OpenTarget(filepath.Join(dir, "t.img"), 1<<20, mover.TargetOptions{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if df, err := d.OpenDirect(); !errors.Is(err, mover.ErrNoDirect) {
		if df != nil {
			df.Close()
		}
		t.Fatalf("OpenDirect on tmpfs: %v, want ErrNoDirect", err)
	}
}
