package mover_test

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/blockmover/blockmover/bench"
	"github.com/blockmover/blockmover/mover"
	"github.com/blockmover/blockmover/repo"
	"github.com/blockmover/blockmover/repo/backend/fs"
	"github.com/blockmover/blockmover/repo/repotest"
)

// The throughput benchmarks read a real file from the page cache (warm
// cache: it was just written) and keep the repository on tmpfs when
// /dev/shm exists, so that they measure the pipeline rather than this
// machine's disk. Each iteration exports (or imports) 1 GiB.
//
//	go test -run XXX -bench 'Export|Import' -benchtime 3x ./mover

const benchSize = 1 << 30

func benchDir(b *testing.B) string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "mover-bench")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(d) })
		return d
	}
	return b.TempDir()
}

func benchRepo(b *testing.B) *repo.Repository {
	be, err := fs.Create(filepath.Join(benchDir(b), "repo"))
	if err != nil {
		b.Fatal(err)
	}
	return repotest.Init(b, be, repo.InitOptions{Chunking: repotest.Chunking(nil)})
}

// benchVolume writes a volume of one data class to a file.
func benchVolume(b *testing.B, class string) string {
	path := filepath.Join(b.TempDir(), class+".img")
	spec := bench.Spec{Size: benchSize, Seed: 42}
	switch class {
	case "zeros":
		if err := os.WriteFile(path, nil, 0o644); err != nil {
			b.Fatal(err)
		}
		if err := os.Truncate(path, benchSize); err != nil {
			b.Fatal(err)
		}
		return path // a sparse file: all holes
	case "file":
		spec.File = 1
	}
	// Real files: Go's tree, /usr/share, /usr/lib, /usr/bin — several GiB,
	// so 1 GiB of file data is new data (about 3× compressible with zstd).
	corpus, err := bench.NewCorpus(bench.DefaultCorpusDirs(bench.GoRoot())...)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := bench.GenerateFile(context.Background(), path, spec, corpus, true); err != nil {
		b.Fatal(err)
	}
	return path
}

func reportRSS(b *testing.B) {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		b.ReportMetric(float64(ru.Maxrss)/1024, "peak-RSS-MiB")
	}
}

func exportOnce(b *testing.B, r *repo.Repository, path string) *mover.ExportResult {
	src, err := mover.OpenSource(path, false)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	res, err := mover.Export(context.Background(), src, r, mover.ExportOptions{Volume: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	return res
}

// BenchmarkExport: new random data, new file data (real files), duplicate
// data (already in the repository) and zeros (holes of a sparse file).
func BenchmarkExport(b *testing.B) {
	for _, class := range []string{"random", "file", "duplicate", "zeros"} {
		b.Run(class, func(b *testing.B) {
			data := class
			if class == "duplicate" {
				data = "file"
			}
			path := benchVolume(b, data)
			r := benchRepo(b)
			if class == "duplicate" {
				exportOnce(b, r, path)
			}
			b.SetBytes(benchSize)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if class != "duplicate" && i > 0 {
					b.StopTimer()
					r = benchRepo(b) // new data every time
					b.StartTimer()
				}
				res := exportOnce(b, r, path)
				b.ReportMetric(float64(res.StoredBytes)/benchSize, "stored/size")
			}
			reportRSS(b)
		})
	}
}

// BenchmarkImport imports 1 GiB of new file data or random data onto a new
// file on tmpfs (holes left as holes).
func BenchmarkImport(b *testing.B) {
	for _, class := range []string{"file", "random"} {
		b.Run(class, func(b *testing.B) {
			path := benchVolume(b, class)
			r := benchRepo(b)
			snap := exportOnce(b, r, path).Snapshot
			dir := benchDir(b)
			b.SetBytes(benchSize)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				out := filepath.Join(dir, "out.img")
				os.Remove(out)
				b.StartTimer()
				dst, err := mover.OpenTarget(out, snap.Size, mover.TargetOptions{Create: true})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := mover.Import(context.Background(), r, snap, dst, mover.ImportOptions{}); err != nil {
					b.Fatal(err)
				}
				dst.Close()
			}
			reportRSS(b)
		})
	}
}
