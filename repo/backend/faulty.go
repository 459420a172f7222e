package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// FaultOptions configure NewFaulty. Probabilities are clamped to [0, 1]; the
// zero value injects nothing.
type FaultOptions struct {
	// Seed seeds the generator that decides which calls fail, so a
	// sequential test sees the same faults on every run.
	Seed uint64
	// ErrorRate is the probability that a call fails with a *TransientError
	// before reaching the wrapped backend.
	ErrorRate float64
	// OpErrorRate overrides ErrorRate for the operations it lists. A
	// failing List delivers a few objects to fn (possibly none) before its
	// error, as a connection lost mid-listing would.
	OpErrorRate map[Op]float64
	// AfterPutErrorRate is the probability that a Put which reached the
	// backend and stored the object still reports a *TransientError (with
	// Landed set): a lost reply. It exercises the path where a retried Put
	// finds its own object.
	AfterPutErrorRate float64
	// GetBodyErrorRate is the probability that a successful Get returns a
	// reader that fails with a *TransientError after a random number of
	// bytes (for a Get to the end of the object, within the first 64 KiB;
	// a shorter object then ends cleanly).
	GetBodyErrorRate float64
	// FailAfterPuts, if positive, makes every Put call after the first
	// FailAfterPuts ones fail with an error wrapping ErrPermanent without
	// storing anything, like a full disk or revoked credentials.
	FailAfterPuts int
	// StallRate is the probability that a call first waits a random time
	// below MaxStall (honouring its context), like a slow network.
	StallRate float64
	MaxStall  time.Duration
}

// TransientError is the error Faulty injects. Retry treats it as transient.
type TransientError struct {
	Op     Op
	Key    string // the key, or the prefix for List
	Landed bool   // a Put stored the object before failing
	Body   bool   // a Get failed while reading the body
}

func (e *TransientError) Error() string {
	var where string
	switch {
	case e.Landed:
		where = " after storing the object"
	case e.Body:
		where = " while reading the body"
	}
	return fmt.Sprintf("faulty: injected transient error in %s %q%s", e.Op, e.Key, where)
}

// Faulty is a Backend that injects faults into calls to a real backend. It
// is what tests use instead of mocks: behaviour stays real, only failure is
// simulated. Faulty is safe for concurrent use if the wrapped backend is;
// concurrent callers draw faults from one generator, so only sequential
// use is reproducible.
type Faulty struct {
	be      Backend
	opts    FaultOptions
	enabled atomic.Bool
	puts    atomic.Int64 // Put calls seen while enabled, for FailAfterPuts

	mu  sync.Mutex // guards rnd
	rnd *rand.Rand

	calls  [numOps]atomic.Int64
	faults [numOps]atomic.Int64
}

// NewFaulty wraps be with the faults described by opts, enabled.
func NewFaulty(be Backend, opts FaultOptions) *Faulty {
	clamp := func(p float64) float64 { return min(max(p, 0), 1) } // NaN becomes 0
	opts.ErrorRate = clamp(opts.ErrorRate)
	opts.AfterPutErrorRate = clamp(opts.AfterPutErrorRate)
	opts.GetBodyErrorRate = clamp(opts.GetBodyErrorRate)
	opts.StallRate = clamp(opts.StallRate)
	opts.OpErrorRate = maps.Clone(opts.OpErrorRate)
	for op, p := range opts.OpErrorRate {
		opts.OpErrorRate[op] = clamp(p)
	}
	f := &Faulty{
		be:   be,
		opts: opts,
		rnd:  rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15)),
	}
	f.enabled.Store(true)
	return f
}

// SetEnabled turns fault injection on or off; while off, calls pass straight
// through (and are still counted). Tests turn faults off to verify what a
// faulty run left behind.
func (f *Faulty) SetEnabled(on bool) { f.enabled.Store(on) }

// Calls returns how many op calls Faulty has seen.
func (f *Faulty) Calls(op Op) int64 {
	if op >= numOps {
		return 0
	}
	return f.calls[op].Load()
}

// Faults returns how many faults Faulty has injected into op calls (stalls
// are not faults).
func (f *Faulty) Faults(op Op) int64 {
	if op >= numOps {
		return 0
	}
	return f.faults[op].Load()
}

func (f *Faulty) chance(p float64) bool {
	if p <= 0 || !f.enabled.Load() {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rnd.Float64() < p
}

func (f *Faulty) int64N(n int64) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rnd.Int64N(n)
}

// begin counts the call, checks ctx and stalls.
func (f *Faulty) begin(ctx context.Context, op Op, key string) error {
	f.calls[op].Add(1)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("faulty: %s %q: %w", op, key, err)
	}
	if f.opts.MaxStall > 0 && f.chance(f.opts.StallRate) {
		if err := Sleep(ctx, time.Duration(f.int64N(int64(f.opts.MaxStall)))); err != nil {
			return fmt.Errorf("faulty: %s %q: stalled: %w", op, key, err)
		}
	}
	return nil
}

// fault decides whether this op call fails before reaching the backend.
func (f *Faulty) fault(op Op) bool {
	p, ok := f.opts.OpErrorRate[op]
	if !ok {
		p = f.opts.ErrorRate
	}
	if !f.chance(p) {
		return false
	}
	f.faults[op].Add(1)
	return true
}

// Put implements Backend.
func (f *Faulty) Put(ctx context.Context, key string, data []byte) error {
	if err := f.begin(ctx, OpPut, key); err != nil {
		return err
	}
	if n := f.opts.FailAfterPuts; n > 0 && f.enabled.Load() && f.puts.Add(1) > int64(n) {
		f.faults[OpPut].Add(1)
		return fmt.Errorf("faulty: put %q: %w: injected after %d puts", key, ErrPermanent, n)
	}
	if f.fault(OpPut) {
		return &TransientError{Op: OpPut, Key: key}
	}
	if err := f.be.Put(ctx, key, data); err != nil {
		return err
	}
	if f.chance(f.opts.AfterPutErrorRate) {
		f.faults[OpPut].Add(1)
		return &TransientError{Op: OpPut, Key: key, Landed: true}
	}
	return nil
}

// Get implements Backend.
func (f *Faulty) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := f.begin(ctx, OpGet, key); err != nil {
		return nil, err
	}
	if f.fault(OpGet) {
		return nil, &TransientError{Op: OpGet, Key: key}
	}
	rc, err := f.be.Get(ctx, key, offset, length)
	if err != nil {
		return nil, err
	}
	if !f.chance(f.opts.GetBodyErrorRate) {
		return rc, nil
	}
	n := int64(64 << 10)
	if length >= 0 {
		n = length
	}
	return &faultyReader{
		ReadCloser: rc,
		left:       f.int64N(n + 1),
		err:        &TransientError{Op: OpGet, Key: key, Body: true},
		counter:    &f.faults[OpGet],
	}, nil
}

// faultyReader fails with err after left bytes.
type faultyReader struct {
	io.ReadCloser
	left    int64
	err     error
	counter *atomic.Int64
	failed  bool
}

func (r *faultyReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		if !r.failed {
			r.failed = true
			r.counter.Add(1)
		}
		return 0, r.err
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.ReadCloser.Read(p)
	r.left -= int64(n)
	return n, err
}

// errListFault stops the wrapped List where Faulty injects a fault.
var errListFault = errors.New("faulty: list fault")

// Stat implements Backend.
func (f *Faulty) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	if err := f.begin(ctx, OpStat, key); err != nil {
		return ObjectInfo{}, err
	}
	if f.fault(OpStat) {
		return ObjectInfo{}, &TransientError{Op: OpStat, Key: key}
	}
	return f.be.Stat(ctx, key)
}

// List implements Backend.
func (f *Faulty) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	if err := f.begin(ctx, OpList, prefix); err != nil {
		return err
	}
	if !f.fault(OpList) {
		return f.be.List(ctx, prefix, fn)
	}
	// Deliver up to 2 objects, then fail.
	left := f.int64N(3)
	err := f.be.List(ctx, prefix, func(fi ObjectInfo) error {
		if left == 0 {
			return errListFault
		}
		left--
		return fn(fi)
	})
	if err == nil || errors.Is(err, errListFault) {
		return &TransientError{Op: OpList, Key: prefix}
	}
	return err
}

// Delete implements Backend.
func (f *Faulty) Delete(ctx context.Context, key string) error {
	if err := f.begin(ctx, OpDelete, key); err != nil {
		return err
	}
	if f.fault(OpDelete) {
		return &TransientError{Op: OpDelete, Key: key}
	}
	return f.be.Delete(ctx, key)
}

// Close closes the wrapped backend; it never fails by injection.
func (f *Faulty) Close() error { return f.be.Close() }
