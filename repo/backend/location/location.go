// Package location opens the storage behind a repository location: a
// directory, or s3://BUCKET/PREFIX. It is the one place that turns a
// location into a backend, with the wrappers a location needs, for the CLI,
// the benchmark harness and library users alike.
package location

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/blockmover/blockmover/repo/backend"
	"github.com/blockmover/blockmover/repo/backend/fs"
	"github.com/blockmover/blockmover/repo/backend/s3"
)

// ErrBadLocation is wrapped by errors in the location itself (an
// unsupported scheme, a malformed S3 URL, options the location cannot
// have): retrying cannot help, the caller must change it.
var ErrBadLocation = errors.New("bad repository location")

// ErrNoDirectory: a directory location that does not exist, opened without
// Create.
var ErrNoDirectory = errors.New("repository directory does not exist")

// Options tune Open.
type Options struct {
	// Create creates a missing directory (with mode 0700). S3 buckets are
	// never created.
	Create bool
	// S3 holds the endpoint, region, TLS and Object Lock settings of an S3
	// location; its Bucket and Prefix come from the location, and its
	// MaxConns from Connections.
	S3 s3.Options
	// Connections bounds the S3 requests in flight (default
	// s3.DefaultMaxConns).
	Connections int
	// Retry tunes the retries of an S3 backend (zero: the defaults); its
	// OnRetry sees every retry, those of opening included.
	Retry backend.RetryOptions
	// Observe, if set, is told of every request the storage serves (see
	// backend.NewObserve): each attempt of an S3 call, each call into a
	// directory. It must not block.
	Observe func(backend.RequestEvent)
}

// IsS3 reports whether loc names an S3 repository (scheme s3, any case).
func IsS3(loc string) bool { return len(loc) >= 5 && strings.EqualFold(loc[:5], "s3://") }

// Open returns the backend of loc. An S3 backend is
// Retry(Limit(Observe(s3), Connections)): transient errors are retried with
// exponential backoff and full jitter, at most Connections requests run at
// once, and opening (which checks the bucket) is retried like any request.
// A directory is not retried (local errors do not heal by retrying) and
// only observed; it must exist unless Create is set. Observe is left out
// when Options.Observe is nil.
func Open(ctx context.Context, loc string, opts Options) (backend.Backend, error) {
	if IsS3(loc) {
		return openS3(ctx, loc, opts)
	}
	if strings.Contains(loc, "://") {
		scheme, _, _ := strings.Cut(loc, "://")
		return nil, fmt.Errorf("%w: %s: unsupported scheme %q (want a directory or s3://BUCKET/PREFIX)", ErrBadLocation, loc, scheme)
	}
	if opts.S3.ObjectLockDays > 0 {
		return nil, fmt.Errorf("%w: Object Lock needs an s3:// repository", ErrBadLocation)
	}
	if opts.Create {
		be, err := fs.Create(loc)
		if err != nil {
			return nil, fmt.Errorf("repository %s: %w", loc, err)
		}
		return observe(be, opts.Observe), nil
	}
	if _, err := os.Stat(loc); err != nil {
		return nil, fmt.Errorf("repository %s: %w", loc, ErrNoDirectory)
	}
	be, err := fs.Open(loc)
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w", loc, err)
	}
	return observe(be, opts.Observe), nil
}

// observe wraps be with backend.NewObserve when fn is set.
func observe(be backend.Backend, fn func(backend.RequestEvent)) backend.Backend {
	if fn == nil {
		return be
	}
	return backend.NewObserve(be, fn)
}

func openS3(ctx context.Context, loc string, opts Options) (backend.Backend, error) {
	o := opts.S3
	var err error
	if o.Bucket, o.Prefix, err = s3.ParseURL(loc); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadLocation, err)
	}
	o.MaxConns = opts.Connections
	if o.MaxConns <= 0 {
		o.MaxConns = s3.DefaultMaxConns
	}
	var be *s3.Backend
	err = backend.RetryCall(ctx, opts.Retry, backend.OpStat, loc, func(ctx context.Context) error {
		var err error
		be, err = s3.Open(ctx, o)
		return err
	})
	if err != nil {
		return nil, err
	}
	return backend.NewRetry(backend.NewLimit(observe(be, opts.Observe), o.MaxConns), opts.Retry), nil
}
