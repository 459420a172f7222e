package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/blockmover/blockmover/repo"
	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/fs"
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

// isS3 reports whether loc names an S3 repository (scheme s3, any case).
func isS3(loc string) bool { return len(loc) >= 5 && strings.EqualFold(loc[:5], "s3://") }

// backendFor opens the storage behind loc: a directory, or s3://BUCKET/PREFIX
// in a bucket that must exist (nothing is created in S3, not even with
// create). A directory repository must exist unless create is set. An S3
// backend is wrapped as Retry(Limit(s3, N)): transient errors are retried
// with exponential backoff and full jitter, and at most N requests (N =
// --connections, default s3.DefaultMaxConns) run at once. A directory is
// not wrapped: local errors do not heal by retrying. lock, if set, makes
// every object written carry that Object Lock retention; it needs S3.
func (g *globalOptions) backendFor(ctx context.Context, loc string, bo backendOptions, create bool, lock *repo.ObjectLock) (backend.Backend, error) {
	if err := checkCount("connections", bo.connections, maxConnections); err != nil {
		return nil, err
	}
	if isS3(loc) {
		bucket, prefix, err := s3.ParseURL(loc)
		if err != nil {
			return nil, usageError{err}
		}
		conns := bo.connections
		if conns <= 0 {
			conns = s3.DefaultMaxConns
		}
		opts := s3.Options{Bucket: bucket, Prefix: prefix, Endpoint: bo.s3Endpoint, Region: bo.s3Region,
			PathStyle: bo.s3PathStyle, CABundle: bo.s3CABundle, ChecksumWhenRequired: bo.s3ChecksumWR, MaxConns: conns}
		if lock != nil {
			opts.ObjectLockDays, opts.ObjectLockMode = lock.Days, s3.LockCompliance
			if lock.Mode == "governance" {
				opts.ObjectLockMode = s3.LockGovernance
			}
		}
		// Opening checks the bucket: a server that is briefly away gets
		// the same retries as every later request.
		var be *s3.Backend
		err = backend.RetryCall(ctx, backend.RetryOptions{}, backend.OpStat, loc, func(ctx context.Context) error {
			var err error
			be, err = s3.Open(ctx, opts)
			return err
		})
		if err != nil {
			return nil, err
		}
		return g.wrap(backend.NewRetry(backend.NewLimit(be, conns), backend.RetryOptions{})), nil
	}
	if strings.Contains(loc, "://") {
		scheme, _, _ := strings.Cut(loc, "://")
		return nil, usagef("repository %s: unsupported scheme %q (want a directory or s3://BUCKET/PREFIX)", loc, scheme)
	}
	if lock != nil {
		return nil, usagef("Object Lock needs an s3:// repository")
	}
	if create {
		be, err := fs.Create(loc)
		if err != nil {
			return nil, fmt.Errorf("repository %s: %w", loc, err)
		}
		return g.wrap(be), nil
	}
	if _, err := os.Stat(loc); err != nil {
		return nil, fmt.Errorf("repository %s does not exist: %w", loc, repo.ErrNotRepository)
	}
	be, err := fs.Open(loc)
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w", loc, err)
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

// openBackend opens an existing repository's storage. For S3 it reads the
// Object Lock setting recorded at init and reopens the bucket with it, so
// every object this command writes carries the retention (repo.Open checks
// the setting against the sealed config, so it cannot be stripped).
func (g *globalOptions) openBackend(ctx context.Context, loc string, bo backendOptions) (backend.Backend, error) {
	be, err := g.backendFor(ctx, loc, bo, false, nil)
	if err != nil || !isS3(loc) {
		return be, err
	}
	lock, err := repo.ReadObjectLock(ctx, be)
	if err == nil && lock == nil {
		return be, nil
	}
	be.Close()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", loc, err)
	}
	return g.backendFor(ctx, loc, bo, false, lock)
}

// uploads is how many packs an export uploads at once.
func (bo backendOptions) uploads(loc string) int {
	switch {
	case bo.connections > 0:
		return bo.connections
	case isS3(loc):
		return defaultS3Uploads
	}
	return 2
}

// downloads is how many workers an import runs: from S3, the library's
// default (2 per CPU, at least 4) keeps requests in flight; from a
// directory, one per CPU — reads are local, and more workers only contend
// for the target's inode lock (1.8 s against 2.1 s for 4 GiB on 2 CPUs).
func (bo backendOptions) downloads(loc string) int {
	switch {
	case bo.connections > 0:
		return bo.connections
	case isS3(loc):
		return 0
	}
	return runtime.GOMAXPROCS(0)
}
