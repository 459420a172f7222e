package backend

import (
	"context"
	"io"
	"sync"
	"time"
)

// RequestEvent describes one finished call into a Backend wrapped by
// NewObserve.
type RequestEvent struct {
	Op       Op
	Key      string        // the key, or the prefix for List
	Duration time.Duration // from the call to its return; for Get, to the body's Close
	// Err is the call's error, nil on success. For Get it is the error of
	// opening, else the first error (other than io.EOF) reading the body.
	Err error
}

// NewObserve returns a Backend that calls fn once for every call into be
// (Put, Get, Stat, List, Delete; not Close) when the call has finished,
// for metrics or logging. A Get that opens is reported when its reader is
// first Closed, so its duration covers the transfer; a reader that is
// never Closed is never reported. fn may be called from many goroutines at
// once and must not block; it does not change what the call returns.
//
// Wrapped under NewRetry, as in Retry(Observe(be)), every attempt is one
// event: the requests the storage actually served. RetryOptions.OnRetry
// reports the retries themselves.
//
// If be is a TempCleaner, so is the result (RemoveStaleTemp is passed
// through unobserved).
func NewObserve(be Backend, fn func(RequestEvent)) Backend {
	o := &observeBackend{be: be, fn: fn}
	if tc, ok := be.(TempCleaner); ok {
		return observeTempBackend{o, tc}
	}
	return o
}

// observeTempBackend is an observed TempCleaner.
type observeTempBackend struct {
	*observeBackend
	tc TempCleaner
}

func (o observeTempBackend) RemoveStaleTemp(ctx context.Context, olderThan time.Duration) (int, int64, error) {
	return o.tc.RemoveStaleTemp(ctx, olderThan)
}

type observeBackend struct {
	be Backend
	fn func(RequestEvent)
}

func (o *observeBackend) report(op Op, key string, start time.Time, err error) {
	o.fn(RequestEvent{Op: op, Key: key, Duration: time.Since(start), Err: err})
}

func (o *observeBackend) Put(ctx context.Context, key string, data []byte) error {
	start := time.Now()
	err := o.be.Put(ctx, key, data)
	o.report(OpPut, key, start, err)
	return err
}

func (o *observeBackend) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	start := time.Now()
	rc, err := o.be.Get(ctx, key, offset, length)
	if err != nil {
		o.report(OpGet, key, start, err)
		return nil, err
	}
	return &observeReader{ReadCloser: rc, o: o, key: key, start: start}, nil
}

// observeReader reports its Get on the first Close, with the first read
// error.
type observeReader struct {
	io.ReadCloser
	o     *observeBackend
	key   string
	start time.Time

	mu   sync.Mutex
	err  error
	done bool
}

func (r *observeReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		r.mu.Lock()
		if r.err == nil {
			r.err = err
		}
		r.mu.Unlock()
	}
	return n, err
}

func (r *observeReader) Close() error {
	err := r.ReadCloser.Close()
	r.mu.Lock()
	first := !r.done
	r.done = true
	rerr := r.err
	r.mu.Unlock()
	if first {
		r.o.report(OpGet, r.key, r.start, rerr)
	}
	return err
}

func (o *observeBackend) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	start := time.Now()
	fi, err := o.be.Stat(ctx, key)
	o.report(OpStat, key, start, err)
	return fi, err
}

func (o *observeBackend) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	start := time.Now()
	err := o.be.List(ctx, prefix, fn)
	o.report(OpList, prefix, start, err)
	return err
}

func (o *observeBackend) Delete(ctx context.Context, key string) error {
	start := time.Now()
	err := o.be.Delete(ctx, key)
	o.report(OpDelete, key, start, err)
	return err
}

func (o *observeBackend) Close() error { return o.be.Close() }
