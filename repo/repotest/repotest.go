// Package repotest sets up repositories for the tests of the packages
// above repo (mover, bench, csi, cmd): on a directory, in memory, or on a
// real S3 server (s3test), with a key derivation cheap enough for tests and
// chunking that is the same in every run. repo's own tests, inside the
// package, keep their helpers there.
//
// The functions fail the test (tb.Fatal) on error and register cleanups
// with tb; they are for tests and benchmarks only.
package repotest

import (
	"context"
	"errors"
	iofs "io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/blockmover/blockmover/chunk"
	"github.com/blockmover/blockmover/repo"
	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/fs"
	"github.com/blockmover/blockmover/repo/backend/mem"
	"github.com/blockmover/blockmover/repo/backend/s3"
	"github.com/blockmover/blockmover/repo/backend/s3/s3test"
)

// Polynomial is the chunker polynomial of test repositories, so that runs
// cut the same chunks.
const Polynomial = 0x3DA3358B4DC173

// Password returns the password of test repositories.
func Password() []byte { return []byte("test password") }

// KDF returns a scrypt setting cheap enough for tests (never for real
// keys).
func KDF() repo.KDFParams { return repo.KDFParams{N: 1 << 10, R: 8, P: 1} }

// Chunking returns mover's default chunking with Polynomial, changed by mod
// if it is not nil.
func Chunking(mod func(*chunk.Params)) *chunk.Params {
	p := chunk.DefaultParams(Polynomial)
	if mod != nil {
		mod(&p)
	}
	return &p
}

// Init initialises a repository on be with Password. Zero fields of opts
// get the test defaults: KDF() and Chunking(nil). The repository is closed
// at the end of the test.
func Init(tb testing.TB, be backend.Backend, opts repo.InitOptions) *repo.Repository {
	tb.Helper()
	if opts.KDF == (repo.KDFParams{}) {
		opts.KDF = KDF()
	}
	if opts.Chunking == nil {
		opts.Chunking = Chunking(nil)
	}
	r, err := repo.Init(context.Background(), be, Password(), opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.Close() })
	return r
}

// Open opens the repository on be with Password; it is closed at the end
// of the test.
func Open(tb testing.TB, be backend.Backend, opts repo.Options) *repo.Repository {
	tb.Helper()
	r, err := repo.Open(context.Background(), be, Password(), opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.Close() })
	return r
}

// Dir returns a directory backend in a new directory under dir ("" for
// the test's temporary directory), and the directory.
func Dir(tb testing.TB, dir string) (backend.Backend, string) {
	tb.Helper()
	if dir == "" {
		dir = tb.TempDir()
	}
	dir = filepath.Join(dir, "repo")
	be, err := fs.Create(dir)
	if err != nil {
		tb.Fatal(err)
	}
	return be, dir
}

// OpenDir returns the directory backend of an existing repository at dir.
func OpenDir(tb testing.TB, dir string) backend.Backend {
	tb.Helper()
	be, err := fs.Open(dir)
	if err != nil {
		tb.Fatal(err)
	}
	return be
}

// Mem returns an empty in-memory backend.
func Mem() backend.Backend { return mem.New() }

// S3Options tune S3.
type S3Options struct {
	// Bucket is used as it is; "" makes a new bucket, with Object Lock
	// when Lock is set.
	Bucket string
	Lock   bool
	Prefix string // default "repo"
	// Conns bounds the requests in flight (default 8).
	Conns int
	// Wrap, if set, wraps the S3 backend inside the connection limit and
	// retries (fault injection).
	Wrap func(backend.Backend) backend.Backend
}

// S3 returns a backend on srv wrapped as the CLI wraps one: retries with
// short delays around a connection limit. It is closed at the end of the
// test.
func S3(tb testing.TB, srv *s3test.Server, o S3Options) backend.Backend {
	tb.Helper()
	if o.Bucket == "" {
		o.Bucket = srv.NewBucket(tb, o.Lock)
	}
	if o.Prefix == "" {
		o.Prefix = "repo"
	}
	if o.Conns == 0 {
		o.Conns = 8
	}
	be, err := s3.Open(context.Background(), s3.Options{Bucket: o.Bucket, Prefix: o.Prefix, Endpoint: srv.Endpoint, PathStyle: true, MaxConns: o.Conns})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { be.Close() })
	var b backend.Backend = backend.NewLimit(be, o.Conns)
	if o.Wrap != nil {
		b = o.Wrap(b)
	}
	return backend.NewRetry(b, backend.RetryOptions{InitialDelay: 20 * time.Millisecond, MaxDelay: 500 * time.Millisecond})
}

// DirPut returns a put function for repo.GenerateIndexOptions.PutPack that
// writes objects straight into the directory repository at dir, without
// the fs backend's fsyncs: generating a million placeholder packs then
// takes seconds, not an hour. The objects are readable and listed as the
// backend's own; only their durability after a power loss differs.
func DirPut(dir string) func(ctx context.Context, key string, data []byte) error {
	return func(ctx context.Context, key string, data []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		name := filepath.Join(dir, filepath.FromSlash(key))
		if err := os.WriteFile(name, data, 0o400); err == nil || !errors.Is(err, iofs.ErrNotExist) {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
			return err
		}
		return os.WriteFile(name, data, 0o400)
	}
}
