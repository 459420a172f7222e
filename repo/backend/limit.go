package backend

import (
	"context"
	"fmt"
	"io"
	"sync"
)

// NewLimit returns a Backend that lets at most n calls into be run at once
// (n < 1 is treated as 1), like a connection pool of size n. Waiting for a
// slot honours ctx. It is safe for concurrent use if be is.
//
// A successful Get holds its slot until the returned reader is Closed, since
// the body is still streaming from the backend: callers must Close readers
// promptly or other calls starve. List holds its slot while be is listing
// but releases it while fn runs, so fn may call the backend (a garbage
// collector deleting what it lists) without deadlock; this relies on List
// calling fn from one goroutine at a time, as Backend requires.
func NewLimit(be Backend, n int) Backend {
	return &limitBackend{be: be, sem: make(chan struct{}, max(n, 1))}
}

type limitBackend struct {
	be  Backend
	sem chan struct{}
}

func (l *limitBackend) acquire(ctx context.Context, op Op, key string) error {
	// A done context must fail even when a slot is free.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("backend: %s %q: %w", op, key, err)
	}
	select {
	case l.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("backend: %s %q: waiting for a connection slot: %w", op, key, ctx.Err())
	}
}

func (l *limitBackend) release() { <-l.sem }

func (l *limitBackend) Put(ctx context.Context, key string, data []byte) error {
	if err := l.acquire(ctx, OpPut, key); err != nil {
		return err
	}
	defer l.release()
	return l.be.Put(ctx, key, data)
}

func (l *limitBackend) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := l.acquire(ctx, OpGet, key); err != nil {
		return nil, err
	}
	rc, err := l.be.Get(ctx, key, offset, length)
	if err != nil {
		l.release()
		return nil, err
	}
	return &limitReader{ReadCloser: rc, release: sync.OnceFunc(l.release)}, nil
}

// limitReader gives the slot back on the first Close.
type limitReader struct {
	io.ReadCloser
	release func()
}

func (r *limitReader) Close() error {
	defer r.release()
	return r.ReadCloser.Close()
}

func (l *limitBackend) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	if err := l.acquire(ctx, OpStat, key); err != nil {
		return ObjectInfo{}, err
	}
	defer l.release()
	return l.be.Stat(ctx, key)
}

func (l *limitBackend) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	if err := l.acquire(ctx, OpList, prefix); err != nil {
		return err
	}
	held := true
	err := l.be.List(ctx, prefix, func(fi ObjectInfo) error {
		l.release()
		held = false
		if err := fn(fi); err != nil {
			return err
		}
		if err := l.acquire(ctx, OpList, prefix); err != nil {
			return err
		}
		held = true
		return nil
	})
	if held {
		l.release()
	}
	return err
}

func (l *limitBackend) Delete(ctx context.Context, key string) error {
	if err := l.acquire(ctx, OpDelete, key); err != nil {
		return err
	}
	defer l.release()
	return l.be.Delete(ctx, key)
}

func (l *limitBackend) Close() error { return l.be.Close() }
