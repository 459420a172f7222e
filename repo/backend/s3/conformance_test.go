package s3

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backendtest"
)

// TestConformance runs the backend conformance suite against versitygw,
// with a fresh bucket, and a prefix, for every subtest.
func TestConformance(t *testing.T) {
	srv := startServer(t, false)
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		return srv.open(t, Options{Bucket: srv.newBucket(t, false), Prefix: "repo/x"})
	})
}

// TestConformanceChecksumWhenRequired runs the suite once more the way an
// S3-compatible store that rejects checksum trailers is used.
func TestConformanceChecksumWhenRequired(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	srv := startServer(t, false)
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		return srv.open(t, Options{Bucket: srv.newBucket(t, false), ChecksumWhenRequired: true})
	})
}

// TestConformanceVersioned runs the suite on a bucket with versioning, where
// Delete leaves delete markers that a later Put must write over.
func TestConformanceVersioned(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	srv := startServer(t, false)
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		bucket := srv.newBucket(t, false)
		if _, err := srv.client().PutBucketVersioning(t.Context(), &s3.PutBucketVersioningInput{
			Bucket:                  aws.String(bucket),
			VersioningConfiguration: &types.VersioningConfiguration{Status: types.BucketVersioningStatusEnabled},
		}); err != nil {
			t.Fatal(err)
		}
		return srv.open(t, Options{Bucket: bucket})
	})
}

// BenchmarkBackend: sequential Put and Get of 4 KiB to 64 MiB objects
// against a local versitygw (so loopback plus its disk writes).
func BenchmarkBackend(b *testing.B) {
	srv := startServer(b, false)
	backendtest.Bench(b, func(b *testing.B) backend.Backend {
		return srv.open(b, Options{Bucket: srv.newBucket(b, false), Prefix: "repo"})
	})
}

// BenchmarkParallel16MiB: Put and Get of 16 MiB objects from as many
// goroutines as the backend has connections, as the mover's I/O workers do.
func BenchmarkParallel16MiB(b *testing.B) {
	const size = 16 << 20
	srv := startServer(b, false)
	for _, whenRequired := range []bool{false, true} {
		name := "checksums=default"
		if whenRequired {
			name = "checksums=whenRequired"
		}
		b.Run("Put/"+name, func(b *testing.B) {
			be := srv.open(b, Options{Bucket: srv.newBucket(b, false), MaxConns: 4, ChecksumWhenRequired: whenRequired})
			data := randBytes(1, size)
			var n atomic.Int64
			b.SetBytes(size)
			b.ReportAllocs()
			b.SetParallelism(max(1, be.Connections()/min(be.Connections(), maxProcs())))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := be.Put(context.Background(), fmt.Sprintf("data/%d", n.Add(1)), data); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
		b.Run("Get/"+name, func(b *testing.B) {
			be := srv.open(b, Options{Bucket: srv.newBucket(b, false), MaxConns: 4, ChecksumWhenRequired: whenRequired})
			if err := be.Put(context.Background(), "data/x", randBytes(2, size)); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(size)
			b.ReportAllocs()
			b.SetParallelism(max(1, be.Connections()/min(be.Connections(), maxProcs())))
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, size)
				for pb.Next() {
					rc, err := be.Get(context.Background(), "data/x", 0, -1)
					if err != nil {
						b.Error(err)
						return
					}
					_, err = io.ReadFull(rc, buf)
					rc.Close()
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

func maxProcs() int { return runtime.GOMAXPROCS(0) }
