package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// Retry defaults, used for zero fields of RetryOptions.
const (
	DefaultMaxAttempts  = 8
	DefaultInitialDelay = 200 * time.Millisecond
	DefaultMaxDelay     = 15 * time.Second
)

// RetryOptions configure NewRetry. The zero value selects the defaults.
type RetryOptions struct {
	// MaxAttempts is the number of attempts per call, the first included;
	// values < 1 select DefaultMaxAttempts. 1 disables retries.
	MaxAttempts int
	// InitialDelay is the upper bound of the wait before the first retry;
	// the bound doubles on each further retry up to MaxDelay. The wait is
	// drawn uniformly from [0, bound] ("full jitter"). Values <= 0 select
	// DefaultInitialDelay.
	InitialDelay time.Duration
	// MaxDelay caps the bound; values <= 0 select DefaultMaxDelay, values
	// below InitialDelay are raised to it.
	MaxDelay time.Duration
	// Rand draws the jitter. Tests pass a seeded source (rand.NewPCG) for
	// reproducible waits; nil uses math/rand/v2's runtime-seeded generator.
	// NewRetry serialises access, so the source need not be safe for
	// concurrent use, but it must not be used elsewhere.
	Rand rand.Source
	// OnRetry, if set, is called before each wait, for logging or metrics.
	// It may be called from many goroutines at once and must not block.
	OnRetry func(RetryEvent)
}

// RetryEvent describes a failed attempt that Retry is about to repeat.
type RetryEvent struct {
	Op      Op
	Key     string        // the key, or the prefix for List
	Attempt int           // the attempt that failed, from 1
	Delay   time.Duration // the wait before the next attempt
	Err     error         // the attempt's error
}

// NewRetry returns a Backend that retries be's transient errors with
// exponential backoff and full jitter. It is safe for concurrent use if be
// is.
//
// An error is transient unless it matches ErrNotFound, ErrExists,
// ErrInvalidRange, ErrInvalidKey, ErrPermanent, context.Canceled or
// context.DeadlineExceeded, or the call's context is done. Backends that
// enforce their own per-request timeouts should therefore report them as
// plain errors, not as context.DeadlineExceeded. Waits honour ctx: a
// cancelled call returns at once with an error wrapping ctx.Err(). When the
// attempts run out, the last error is returned wrapped, so errors.Is and
// errors.As still see it.
//
// Per operation:
//   - Put: when a retry reports ErrExists, the earlier attempt may have
//     stored the object and lost only its reply. Put then Stats the key and
//     reports success if the stored size equals len(data). This is sound
//     because the repository names objects by a hash of their content: an
//     object of the same key and size is the same object. A Put whose
//     first attempt reports ErrExists returns that error unchanged.
//   - Get: opening is retried, and a body that breaks while it is read is
//     resumed by a ranged Get from the byte where it stopped (the failures
//     of one Get count against MaxAttempts together).
//   - List: a listing that fails part-way is restarted, and objects that fn
//     has already seen are skipped, so fn sees each key at most once (the
//     keys seen are kept in memory until List returns). An error from fn is
//     returned at once and never retried.
//   - Delete: a retry after a lost reply may report ErrNotFound although the
//     first attempt deleted the object; callers that delete should treat
//     ErrNotFound as done.
func NewRetry(be Backend, opts RetryOptions) Backend {
	if opts.MaxAttempts < 1 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	if opts.InitialDelay <= 0 {
		opts.InitialDelay = DefaultInitialDelay
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = DefaultMaxDelay
	}
	if opts.MaxDelay < opts.InitialDelay {
		opts.MaxDelay = opts.InitialDelay
	}
	r := &retryBackend{be: be, opts: opts}
	if opts.Rand != nil {
		r.rnd = rand.New(opts.Rand)
	}
	return r
}

// RetryCall calls f under the policy of opts until it succeeds, fails for
// good (an error NewRetry does not retry: ErrPermanent, ErrNotFound, a
// done context, …), or runs out of attempts. It is for a call outside a
// Backend that checks one, such as the first request when opening a
// remote backend; op and key name it in errors and retry events.
func RetryCall(ctx context.Context, opts RetryOptions, op Op, key string, f func(ctx context.Context) error) error {
	r := NewRetry(nil, opts).(*retryBackend)
	return r.do(ctx, op, key, func(int) error { return f(ctx) })
}

type retryBackend struct {
	be   Backend
	opts RetryOptions

	mu  sync.Mutex // guards rnd
	rnd *rand.Rand // nil: use the global generator
}

// listFnError carries an error returned by List's fn through the retry loop,
// which must not retry it.
type listFnError struct{ err error }

func (e *listFnError) Error() string { return e.err.Error() }

// retryable reports whether err, returned by a call under ctx, is worth
// another attempt.
func retryable(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	var fe *listFnError
	switch {
	case errors.Is(err, ErrNotFound),
		errors.Is(err, ErrExists),
		errors.Is(err, ErrInvalidRange),
		errors.Is(err, ErrInvalidKey),
		errors.Is(err, ErrPermanent),
		errors.Is(err, context.Canceled),
		errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &fe):
		return false
	}
	return true
}

// delay returns the wait after the given failed attempt (from 1): uniform
// in [0, min(MaxDelay, InitialDelay·2^(attempt-1))].
func (r *retryBackend) delay(attempt int) time.Duration {
	bound := r.opts.InitialDelay
	for i := 1; i < attempt && bound < r.opts.MaxDelay; i++ {
		bound *= 2
	}
	bound = min(bound, r.opts.MaxDelay)
	if r.rnd == nil {
		return rand.N(bound + 1)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return time.Duration(r.rnd.Int64N(int64(bound) + 1))
}

// Sleep blocks for d or until ctx is done, whichever comes first, and
// returns ctx's error in the second case (for backends that wait between
// attempts of their own).
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// do calls f until it succeeds, fails for good, or runs out of attempts.
func (r *retryBackend) do(ctx context.Context, op Op, key string, f func(attempt int) error) error {
	var last error
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			if last == nil {
				return fmt.Errorf("backend: %s %q: %w", op, key, err)
			}
			return fmt.Errorf("backend: %s %q: %w (last error: %v)", op, key, err, last)
		}
		err := f(attempt)
		if !retryable(ctx, err) {
			if cerr := ctx.Err(); err != nil && cerr != nil && !errors.Is(err, cerr) {
				// The context ended during the attempt: say so.
				return fmt.Errorf("backend: %s %q: %w (last error: %w)", op, key, cerr, err)
			}
			return err
		}
		last = err
		if attempt >= r.opts.MaxAttempts {
			return fmt.Errorf("backend: %s %q: giving up after %d attempts: %w", op, key, attempt, err)
		}
		d := r.delay(attempt)
		if r.opts.OnRetry != nil {
			r.opts.OnRetry(RetryEvent{Op: op, Key: key, Attempt: attempt, Delay: d, Err: err})
		}
		if err := Sleep(ctx, d); err != nil {
			return fmt.Errorf("backend: %s %q: %w while waiting to retry (last error: %v)", op, key, err, last)
		}
	}
}

func (r *retryBackend) Put(ctx context.Context, key string, data []byte) error {
	return r.do(ctx, OpPut, key, func(attempt int) error {
		err := r.be.Put(ctx, key, data)
		if attempt > 1 && errors.Is(err, ErrExists) {
			// An earlier attempt failed with a transient error; it may have
			// landed. Same key and size means the same (hash-named) object.
			fi, serr := r.be.Stat(ctx, key)
			switch {
			case serr == nil && fi.Size == int64(len(data)):
				return nil
			case retryable(ctx, serr):
				return serr // cannot tell yet: try the Put and Stat again
			}
		}
		return err
	})
}

func (r *retryBackend) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	rc, err := r.open(ctx, key, offset, length)
	if err != nil {
		return nil, err
	}
	return &resumingReader{r: r, ctx: ctx, key: key, off: offset, left: length, rc: rc}, nil
}

func (r *retryBackend) open(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	var rc io.ReadCloser
	err := r.do(ctx, OpGet, key, func(int) error {
		var err error
		rc, err = r.be.Get(ctx, key, offset, length)
		return err
	})
	return rc, err
}

// resumingReader reads a Get's body; when the connection breaks with a
// retryable error, it opens the object again from where it stopped (a
// ranged Get), up to MaxAttempts times in all.
type resumingReader struct {
	r        *retryBackend
	ctx      context.Context
	key      string
	off      int64 // next byte to deliver
	left     int64 // bytes still to deliver; < 0: to the end
	rc       io.ReadCloser
	failures int
	broken   bool // the last Read returned data with an error: reopen
}

func (rr *resumingReader) Read(p []byte) (int, error) {
	for {
		if rr.broken {
			rr.broken = false
			if err := rr.reopen(); err != nil {
				return 0, err
			}
		}
		if rr.left == 0 {
			return 0, io.EOF
		}
		if rr.left > 0 && int64(len(p)) > rr.left {
			p = p[:rr.left]
		}
		n, err := rr.rc.Read(p)
		rr.off += int64(n)
		if rr.left > 0 {
			rr.left -= int64(n)
		}
		if err == nil || err == io.EOF {
			return n, err
		}
		if !retryable(rr.ctx, err) || rr.failures+1 >= rr.r.opts.MaxAttempts {
			return n, err
		}
		rr.failures++
		if rr.r.opts.OnRetry != nil {
			rr.r.opts.OnRetry(RetryEvent{Op: OpGet, Key: rr.key, Attempt: rr.failures, Err: err})
		}
		rr.broken = true
		if n > 0 {
			return n, nil
		}
	}
}

func (rr *resumingReader) reopen() error {
	rr.rc.Close()
	if err := Sleep(rr.ctx, rr.r.delay(rr.failures)); err != nil {
		return err
	}
	rc, err := rr.r.open(rr.ctx, rr.key, rr.off, rr.left)
	if err != nil {
		rr.rc = io.NopCloser(strings.NewReader(""))
		return err
	}
	rr.rc = rc
	return nil
}

func (rr *resumingReader) Close() error { return rr.rc.Close() }

func (r *retryBackend) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	var fi ObjectInfo
	err := r.do(ctx, OpStat, key, func(int) error {
		var err error
		fi, err = r.be.Stat(ctx, key)
		return err
	})
	if err != nil {
		return ObjectInfo{}, err
	}
	return fi, nil
}

func (r *retryBackend) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	seen := make(map[string]struct{})
	var fnErr error
	err := r.do(ctx, OpList, prefix, func(int) error {
		err := r.be.List(ctx, prefix, func(fi ObjectInfo) error {
			if _, ok := seen[fi.Key]; ok {
				return nil
			}
			seen[fi.Key] = struct{}{}
			if err := fn(fi); err != nil {
				fnErr = err
				return err
			}
			return nil
		})
		if fnErr != nil {
			return &listFnError{fnErr}
		}
		return err
	})
	if fnErr != nil {
		return fnErr
	}
	return err
}

func (r *retryBackend) Delete(ctx context.Context, key string) error {
	return r.do(ctx, OpDelete, key, func(int) error {
		return r.be.Delete(ctx, key)
	})
}

func (r *retryBackend) Close() error { return r.be.Close() }
