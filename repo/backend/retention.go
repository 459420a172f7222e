package backend

import (
	"context"
	"errors"
	"fmt"
)

// Retention is a write-once retention that every object written carries:
// an S3 Object Lock of Days days from the time of writing, in Mode. The
// zero Retention is none.
type Retention struct {
	Days int
	// Mode is "compliance" (nobody can shorten it, not even the account's
	// root) or "governance" (a permission can).
	Mode string
}

// Retention modes, as S3 names them in lower case.
const (
	RetentionCompliance = "compliance"
	RetentionGovernance = "governance"
)

// ErrNoRetention: the backend cannot store objects under a retention.
// Errors wrapping it also wrap ErrPermanent.
var ErrNoRetention = errors.New("the storage cannot keep objects under a retention (S3 Object Lock)")

// Retainer is a backend that can write objects under a Retention (S3 with
// Object Lock). The wrappers of this package forward it to the backend
// they wrap.
type Retainer interface {
	// SetRetention makes every Put that starts after it returns store
	// its object under r. It checks that the storage can (an S3 bucket
	// must have Object Lock enabled) and returns an error wrapping
	// ErrNoRetention, or another error, when not; the setting is then
	// unchanged. It is safe for concurrent use with the other methods.
	SetRetention(ctx context.Context, r Retention) error
	// Retention returns what Put applies now.
	Retention() Retention
}

// SetRetention makes every later Put of be carry r, or returns an error
// wrapping ErrNoRetention when be is no Retainer (or wraps none).
func SetRetention(ctx context.Context, be Backend, r Retention) error {
	if r.Days > 0 && r.Mode != RetentionCompliance && r.Mode != RetentionGovernance {
		return fmt.Errorf("retention mode %q: want %s or %s: %w", r.Mode, RetentionCompliance, RetentionGovernance, ErrPermanent)
	}
	rt, ok := be.(Retainer)
	if !ok {
		return fmt.Errorf("%T: %w: %w", be, ErrNoRetention, ErrPermanent)
	}
	return rt.SetRetention(ctx, r)
}

// RetentionOf returns the retention be applies to what it writes: the
// zero Retention when none.
func RetentionOf(be Backend) Retention {
	if rt, ok := be.(Retainer); ok {
		return rt.Retention()
	}
	return Retention{}
}

// forwardRetention is SetRetention for a wrapper around inner.
func forwardRetention(ctx context.Context, inner Backend, r Retention) error {
	return SetRetention(ctx, inner, r)
}

func (r *retryBackend) SetRetention(ctx context.Context, ret Retention) error {
	// Setting it may ask the store (is Object Lock on?): retried like
	// any request.
	return RetryCall(ctx, r.opts, OpStat, "", func(ctx context.Context) error {
		return forwardRetention(ctx, r.be, ret)
	})
}

func (r *retryBackend) Retention() Retention { return RetentionOf(r.be) }

func (l *limitBackend) SetRetention(ctx context.Context, r Retention) error {
	if err := l.acquire(ctx, OpStat, ""); err != nil {
		return err
	}
	defer l.release()
	return forwardRetention(ctx, l.be, r)
}

func (l *limitBackend) Retention() Retention { return RetentionOf(l.be) }

// SetRetention forwards to the wrapped backend, without faults.
func (f *Faulty) SetRetention(ctx context.Context, r Retention) error {
	return forwardRetention(ctx, f.be, r)
}

// Retention returns the wrapped backend's.
func (f *Faulty) Retention() Retention { return RetentionOf(f.be) }
