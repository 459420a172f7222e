package mover_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/blockmover/blockmover/mover"
	"github.com/blockmover/blockmover/repo"
	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/s3"
	"github.com/blockmover/blockmover/repo/backend/s3/s3test"
	"github.com/blockmover/blockmover/repo/repotest"
)

// The S3 throughput benchmarks: the 1 GiB volumes of BenchmarkExport and
// BenchmarkImport, against versitygw on loopback (posix backend in a
// temporary directory on disk, sharing the CPUs with the benchmark),
// through the backend stack the CLI builds: Retry(Limit(s3, C)) with C
// connections, C packs uploaded at once on export and C fetch workers on
// import (mover --connections C). Compare with BenchmarkExport/file and
// BenchmarkImport/file for the directory repository. peak-RSS-MiB is the
// test process's maximum so far, setup included; retries/op counts the
// retried backend calls (0 on a healthy loopback).
//
//	go test -run XXX -bench 'S3' -benchtime 3x ./mover

// benchS3Conns are the connection counts measured; 4 is the CLI's default
// number of packs in flight to S3.
var benchS3Conns = []int{2, 4, 8}

// benchS3Backend opens bucket as the CLI opens S3, Retry(Limit(s3,
// conns)), and counts the retries.
func benchS3Backend(b *testing.B, srv *s3test.Server, bucket string, conns int, retries *atomic.Int64) backend.Backend {
	be, err := s3.Open(context.Background(), s3.Options{Bucket: bucket, Prefix: "repo", Endpoint: srv.Endpoint, PathStyle: true, MaxConns: conns})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { be.Close() })
	return backend.NewRetry(backend.NewLimit(be, conns), backend.RetryOptions{
		OnRetry: func(backend.RetryEvent) { retries.Add(1) },
	})
}

// benchS3Repo creates a repository in a new bucket; it returns the bucket
// too.
func benchS3Repo(b *testing.B, srv *s3test.Server, conns int, retries *atomic.Int64) (*repo.Repository, string) {
	bucket := srv.NewBucket(b, false)
	r, err := repo.Init(context.Background(), benchS3Backend(b, srv, bucket, conns, retries), testPassword,
		repo.InitOptions{KDF: repotest.KDF()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close() })
	return r, bucket
}

func exportS3(b *testing.B, r *repo.Repository, path string, conns int) *mover.ExportResult {
	src, err := mover.OpenSource(path, false)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	res, err := mover.Export(context.Background(), src, r, mover.ExportOptions{Volume: "bench", Uploads: conns})
	if err != nil {
		b.Fatal(err)
	}
	return res
}

// BenchmarkExportS3 exports 1 GiB of new data (real files, or random)
// into a new bucket per iteration.
func BenchmarkExportS3(b *testing.B) {
	srv := s3test.Start(b, false)
	for _, class := range []string{"file", "random"} {
		b.Run(class, func(b *testing.B) {
			path := benchVolume(b, class)
			for _, conns := range benchS3Conns {
				b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
					var retries atomic.Int64
					b.SetBytes(benchSize)
					b.ResetTimer()
					for range b.N {
						b.StopTimer()
						r, _ := benchS3Repo(b, srv, conns, &retries)
						b.StartTimer()
						res := exportS3(b, r, path, conns)
						b.ReportMetric(float64(res.StoredBytes)/benchSize, "stored/size")
					}
					b.ReportMetric(float64(retries.Load())/float64(b.N), "retries/op")
					reportRSS(b)
				})
			}
		})
	}
}

// BenchmarkImportS3 imports a 1 GiB snapshot (real files, or random) from
// S3 onto a new file on tmpfs (holes left as holes).
func BenchmarkImportS3(b *testing.B) {
	srv := s3test.Start(b, false)
	for _, class := range []string{"file", "random"} {
		b.Run(class, func(b *testing.B) {
			path := benchVolume(b, class)
			var retries atomic.Int64
			w, bucket := benchS3Repo(b, srv, 8, &retries)
			snap := exportS3(b, w, path, 8).Snapshot
			os.Remove(path)
			dir := benchDir(b)
			out := filepath.Join(dir, "out.img")
			for _, conns := range benchS3Conns {
				b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
					var retries atomic.Int64
					r, err := repo.Open(context.Background(), benchS3Backend(b, srv, bucket, conns, &retries), testPassword, repo.Options{})
					if err != nil {
						b.Fatal(err)
					}
					defer r.Close()
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
						if _, err := mover.Import(context.Background(), r, snap, dst, mover.ImportOptions{Downloads: conns}); err != nil {
							b.Fatal(err)
						}
						dst.Close()
					}
					b.StopTimer()
					os.Remove(out)
					b.ReportMetric(float64(retries.Load())/float64(b.N), "retries/op")
					reportRSS(b)
				})
			}
		})
	}
}
