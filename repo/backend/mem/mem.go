// Package mem is an in-memory backend for tests and fault injection. It
// follows the Backend contract exactly, including ErrExists on overwrite and
// the key rules of backend.CheckKey, so code tested against it behaves the
// same on a real backend.
package mem

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/blockmover/blockmover/repo/backend"
)

// Backend keeps objects in a map. It is safe for concurrent use. Put copies
// data in, so the caller may reuse its buffer at once; stored bytes are
// never modified afterwards, and readers from Get copy out of them, so no
// caller ever holds a reference to stored bytes. List calls fn with no lock
// held, in random order, so fn may call the backend.
type Backend struct {
	mu      sync.RWMutex
	objects map[string]object
	closed  bool
}

type object struct {
	data    []byte // immutable once stored
	modTime time.Time
}

var _ backend.Backend = (*Backend)(nil)

// New returns an empty in-memory backend.
func New() *Backend {
	return &Backend{objects: make(map[string]object)}
}

// check validates a call before any work.
func (b *Backend) check(ctx context.Context, op backend.Op, key string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("mem: %s %q: %w", op, key, err)
	}
	if op != backend.OpList {
		if err := backend.CheckKey(key); err != nil {
			return fmt.Errorf("mem: %s: %w", op, err)
		}
	}
	return nil
}

// errClosed reports use after Close; it must be called with mu held.
func (b *Backend) errClosed(op backend.Op, key string) error {
	if b.closed {
		return fmt.Errorf("mem: %s %q: %w: backend is closed", op, key, backend.ErrPermanent)
	}
	return nil
}

// Put implements backend.Backend.
func (b *Backend) Put(ctx context.Context, key string, data []byte) error {
	if err := b.check(ctx, backend.OpPut, key); err != nil {
		return err
	}
	obj := object{data: bytes.Clone(data), modTime: time.Now().Round(0)}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.errClosed(backend.OpPut, key); err != nil {
		return err
	}
	if _, ok := b.objects[key]; ok {
		return fmt.Errorf("mem: put %q: %w", key, backend.ErrExists)
	}
	b.objects[key] = obj
	return nil
}

func (b *Backend) lookup(op backend.Op, key string) (object, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if err := b.errClosed(op, key); err != nil {
		return object{}, err
	}
	obj, ok := b.objects[key]
	if !ok {
		return object{}, fmt.Errorf("mem: %s %q: %w", op, key, backend.ErrNotFound)
	}
	return obj, nil
}

// Get implements backend.Backend.
func (b *Backend) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := b.check(ctx, backend.OpGet, key); err != nil {
		return nil, err
	}
	obj, err := b.lookup(backend.OpGet, key)
	if err != nil {
		return nil, err
	}
	size := int64(len(obj.data))
	if offset < 0 || offset > size || length > size-offset {
		return nil, fmt.Errorf("mem: get %q: %w: offset %d length %d in object of %d bytes",
			key, backend.ErrInvalidRange, offset, length, size)
	}
	if length < 0 {
		length = size - offset
	}
	return &reader{r: bytes.NewReader(obj.data[offset : offset+length])}, nil
}

// reader exposes only Read, so no WriteTo hands stored bytes to a writer.
type reader struct{ r *bytes.Reader }

func (r *reader) Read(p []byte) (int, error) { return r.r.Read(p) }
func (r *reader) Close() error               { return nil }

// Stat implements backend.Backend.
func (b *Backend) Stat(ctx context.Context, key string) (backend.ObjectInfo, error) {
	if err := b.check(ctx, backend.OpStat, key); err != nil {
		return backend.ObjectInfo{}, err
	}
	obj, err := b.lookup(backend.OpStat, key)
	if err != nil {
		return backend.ObjectInfo{}, err
	}
	return backend.ObjectInfo{Key: key, Size: int64(len(obj.data)), ModTime: obj.modTime}, nil
}

// List implements backend.Backend.
func (b *Backend) List(ctx context.Context, prefix string, fn func(backend.ObjectInfo) error) error {
	if err := b.check(ctx, backend.OpList, prefix); err != nil {
		return err
	}
	var infos []backend.ObjectInfo
	b.mu.RLock()
	err := b.errClosed(backend.OpList, prefix)
	if err == nil {
		for key, obj := range b.objects { // random order, on purpose
			if strings.HasPrefix(key, prefix) {
				infos = append(infos, backend.ObjectInfo{Key: key, Size: int64(len(obj.data)), ModTime: obj.modTime})
			}
		}
	}
	b.mu.RUnlock()
	if err != nil {
		return err
	}
	for _, fi := range infos {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("mem: list %q: %w", prefix, err)
		}
		if err := fn(fi); err != nil {
			return err
		}
	}
	return nil
}

// Delete implements backend.Backend.
func (b *Backend) Delete(ctx context.Context, key string) error {
	if err := b.check(ctx, backend.OpDelete, key); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.errClosed(backend.OpDelete, key); err != nil {
		return err
	}
	if _, ok := b.objects[key]; !ok {
		return fmt.Errorf("mem: delete %q: %w", key, backend.ErrNotFound)
	}
	delete(b.objects, key)
	return nil
}

// Close drops all objects; later calls fail with an error wrapping
// backend.ErrPermanent. Readers already returned by Get stay readable.
// Closing twice is harmless.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	b.objects = nil
	return nil
}
