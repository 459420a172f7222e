package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/blockmover/blockmover/repo"
	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/location"
	"github.com/blockmover/blockmover/repo/backend/s3"
	"github.com/spf13/cobra"
)

// backendOptions are the storage flags of commands that open a repository.
type backendOptions struct {
	connections  int
	s3Endpoint   string
	s3Region     string
	s3PathStyle  bool
	s3CABundle   string
	s3ChecksumWR bool
}

func (b *backendOptions) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.IntVar(&b.connections, "connections", 0, "parallel repository requests, at most 256: packs an export uploads at once, import and check workers, and the S3 connection limit (default: 4 uploads to S3, 2 to a directory; import 1 worker per CPU from a directory, 2 per CPU (at least 4) from S3; 16 S3 connections)")
	f.StringVar(&b.s3Endpoint, "s3-endpoint", "", "S3 endpoint URL (default $AWS_ENDPOINT_URL, else AWS)")
	f.StringVar(&b.s3Region, "s3-region", "", "S3 region (default $AWS_REGION, else us-east-1)")
	f.BoolVar(&b.s3PathStyle, "s3-path-style", false, "address buckets as ENDPOINT/BUCKET (needed for localhost and most S3-compatible stores)")
	f.StringVar(&b.s3CABundle, "s3-ca-bundle", "", "PEM file of CA certificates to trust for the S3 endpoint")
	f.BoolVar(&b.s3ChecksumWR, "s3-checksum-when-required", false, "send request checksums only when S3 requires them (for stores that reject the SDK's default CRC trailers)")
}

// defaultS3Uploads bounds the packs an export has in flight to S3 when
// --connections is not given: each holds a pack of memory (16 MiB by
// default), and on loopback 8 gained little over 4 (BENCHMARKS.md).
const defaultS3Uploads = 4

// backendFor opens the storage behind loc with location.Open (see there:
// S3 is wrapped as Retry(Limit(s3, --connections)), a directory must exist
// unless create is set), after checking the flags. lock, if set, makes
// every object written carry that Object Lock retention; it needs S3.
func (g *globalOptions) backendFor(ctx context.Context, loc string, bo backendOptions, create bool, lock *repo.ObjectLock) (backend.Backend, error) {
	if err := checkCount("connections", bo.connections, maxConnections); err != nil {
		return nil, err
	}
	opts := location.Options{Create: create, Connections: bo.connections,
		S3: s3.Options{Endpoint: bo.s3Endpoint, Region: bo.s3Region, PathStyle: bo.s3PathStyle, CABundle: bo.s3CABundle, ChecksumWhenRequired: bo.s3ChecksumWR}}
	opts.Retry.OnRetry, opts.Observe = g.pod.retried, g.pod.requestObserver() // logs and metrics (pod.go)
	if lock != nil {
		opts.S3.ObjectLockDays, opts.S3.ObjectLockMode = lock.Days, s3.LockCompliance
		if lock.Mode == "governance" {
			opts.S3.ObjectLockMode = s3.LockGovernance
		}
	}
	be, err := location.Open(ctx, loc, opts)
	switch {
	case errors.Is(err, location.ErrBadLocation):
		return nil, usageError{err}
	case errors.Is(err, location.ErrNoDirectory):
		return nil, fmt.Errorf("repository %s does not exist (run mover init first): %w", loc, repo.ErrNotRepository)
	}
	if err != nil {
		return nil, err
	}
	return g.wrap(be), nil
}

// wrap applies the environment's backend wrapper, if any.
func (g *globalOptions) wrap(be backend.Backend) backend.Backend {
	if g.env.wrapBackend == nil {
		return be
	}
	return g.env.wrapBackend(be)
}

// openBackend opens an existing repository's storage. repo.Open applies
// the Object Lock retention recorded at init to it (see repo.ObjectLock).
func (g *globalOptions) openBackend(ctx context.Context, loc string, bo backendOptions) (backend.Backend, error) {
	return g.backendFor(ctx, loc, bo, false, nil)
}

// uploads is how many packs an export uploads at once.
func (bo backendOptions) uploads(loc string) int {
	switch {
	case bo.connections > 0:
		return bo.connections
	case location.IsS3(loc):
		return defaultS3Uploads
	}
	return 2
}

// downloads is how many download workers (fetch, decrypt, verify) an
// import runs: from S3, the library's default (2 per CPU, at least 4)
// keeps requests in flight (fixed here, before spareProc adds a P); from a
// directory, one per CPU — reads are
// local and decoding is CPU work (one per CPU was 1.8 s against 2.1 s for
// 4 GiB on 2 CPUs when the workers also wrote; the import's writer now
// writes beside them).
func (bo backendOptions) downloads(loc string) int {
	switch {
	case bo.connections > 0:
		return bo.connections
	case location.IsS3(loc):
		return max(4, 2*cpus())
	}
	return cpus()
}
