package mover_test

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/blockmover/blockmover/bench"
	"github.com/blockmover/blockmover/mover"
)

// BenchmarkImportTmpfs imports a 1 GiB volume shaped like the vm-image of
// BENCHMARKS.md (40% zeros, 30% real file data, 10% duplicates, the rest
// random) from a repository on tmpfs onto a new file on tmpfs (issue 15:
// the restore onto tmpfs), with the import's variants. Beside MB/s it
// reports the CPU seconds (user + system, the whole process) per GiB of
// volume and the cores used (CPU / wall): on a shared machine the wall
// clock follows the other processes, the CPU per GiB much less. The
// variants ask whether the plumbing costs CPU: pack reads of one blob or
// so instead of 16 MiB runs (cache locality), twice the download workers
// (each writes its own chunks onto tmpfs: ImportOptions.Writers).
//
//	go test -run XXX -bench ImportTmpfs -count 6 ./mover | tee new.txt; benchstat new.txt
func BenchmarkImportTmpfs(b *testing.B) {
	if fi, err := os.Stat("/dev/shm"); err != nil || !fi.IsDir() {
		b.Skip("no /dev/shm")
	}
	path := filepath.Join(b.TempDir(), "vm.img")
	corpus, err := bench.NewCorpus(bench.DefaultCorpusDirs(bench.GoRoot())...)
	if err != nil {
		b.Fatal(err)
	}
	spec := bench.Spec{Size: benchSize, Seed: 7, Zero: 0.4, File: 0.3, Duplicate: 0.1}
	if _, err := bench.GenerateFile(context.Background(), path, spec, corpus, true); err != nil {
		b.Fatal(err)
	}
	r := benchRepo(b)
	snap := exportOnce(b, r, path).Snapshot
	out := filepath.Join(benchDir(b), "out.img")
	for _, c := range []struct {
		name string
		opts mover.ImportOptions
	}{
		{"default", mover.ImportOptions{}},
		{"range=1MiB", mover.ImportOptions{MaxRange: 1 << 20}},
		{"downloads=4", mover.ImportOptions{Downloads: 4}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(benchSize)
			var cpu, wall time.Duration
			for range b.N {
				b.StopTimer()
				os.Remove(out)
				c0, t0 := cpuTime(), time.Now()
				b.StartTimer()
				dst, err := mover.OpenTarget(out, snap.Size, mover.TargetOptions{Create: true})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := mover.Import(context.Background(), r, snap, dst, c.opts); err != nil {
					b.Fatal(err)
				}
				dst.Close()
				b.StopTimer()
				cpu, wall = cpu+cpuTime()-c0, wall+time.Since(t0)
			}
			os.Remove(out)
			b.ReportMetric(cpu.Seconds()/float64(b.N)/(float64(benchSize)/(1<<30)), "CPU-s/GiB")
			b.ReportMetric(cpu.Seconds()/wall.Seconds(), "cores")
			reportRSS(b)
		})
	}
}

// cpuTime is the process's user + system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
