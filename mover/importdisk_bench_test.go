package mover_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/blockmover/blockmover/mover"
)

// BenchmarkImportDisk imports the 1 GiB "file" volume of BenchmarkImport
// (repository on tmpfs) onto a new file on a disk, fdatasync included:
// through the page cache, and written directly with one and with two
// writers (issue 15: direct writes). The target directory is
// $MOVER_BENCH_DISK, else /var/tmp; the benchmark is skipped when the
// target cannot be written directly there (tmpfs). Compare with benchstat:
//
//	go test -run XXX -bench ImportDisk -count 6 ./mover | tee new.txt; benchstat new.txt
func BenchmarkImportDisk(b *testing.B) {
	dir := os.Getenv("MOVER_BENCH_DISK")
	if dir == "" {
		dir = "/var/tmp"
	}
	dir, err := os.MkdirTemp(dir, "mover-bench-disk")
	if err != nil {
		b.Skipf("no directory for the target: %v", err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	out := filepath.Join(dir, "out.img")
	if d, err := mover.OpenTarget(out, 1<<20, mover.TargetOptions{Create: true}); err != nil {
		b.Fatal(err)
	} else {
		df, err := d.OpenDirect()
		d.Close()
		os.Remove(out)
		if err != nil {
			b.Skipf("%s: %v", dir, err)
		}
		df.Close()
	}
	path := benchVolume(b, "file")
	r := benchRepo(b)
	snap := exportOnce(b, r, path).Snapshot
	for _, c := range []struct {
		name string
		opts mover.ImportOptions
	}{
		{"buffered", mover.ImportOptions{Buffered: true}},
		{"direct-writers=1", mover.ImportOptions{Writers: 1}},
		{"direct-writers=2", mover.ImportOptions{Writers: 2}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(benchSize)
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				os.Remove(out)
				b.StartTimer()
				dst, err := mover.OpenTarget(out, snap.Size, mover.TargetOptions{Create: true})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := mover.Import(context.Background(), r, snap, dst, c.opts); err != nil {
					b.Fatal(err)
				}
				dst.Close()
			}
			b.StopTimer()
			os.Remove(out)
			reportRSS(b)
		})
	}
}
