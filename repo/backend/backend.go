// Package backend defines the small storage interface a repository lives on,
// and the errors every implementation reports.
//
// A backend is a flat namespace of immutable objects named by slash-separated
// keys such as "config", "keys/3f…", "index/9a…" or "data/ab/ab12…" (CheckKey
// states the rules; invalid keys are ErrInvalidKey everywhere). Objects
// are written once and never modified; the repository names content objects
// by a hash of their bytes, so writing the same key twice with the same bytes
// is harmless, and writing it with other bytes is refused (ErrExists).
//
// Behaviour such as retries, connection limits, observation (metrics) and
// fault injection is added by wrapping a Backend (see NewRetry, NewLimit,
// NewObserve, NewFaulty), never inside an implementation. Package backendtest holds the conformance suite that every
// implementation runs.
package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// Sentinel errors. Implementations wrap them with %w so callers test with
// errors.Is.
var (
	// ErrNotFound: the object does not exist.
	ErrNotFound = errors.New("object not found")
	// ErrExists: Put was asked to create an object that already exists.
	ErrExists = errors.New("object already exists")
	// ErrInvalidRange: a ranged Get asked for bytes outside the object.
	ErrInvalidRange = errors.New("invalid range")
	// ErrPermanent marks an error that retrying cannot fix (permission
	// denied, bad credentials, missing bucket). The Retry wrapper gives up at
	// once on errors that match it, ErrNotFound, ErrExists and ErrInvalidRange.
	ErrPermanent = errors.New("permanent backend error")
)

// ObjectInfo describes one stored object.
type ObjectInfo struct {
	Key     string    // full key, e.g. "data/ab/ab12…"
	Size    int64     // bytes
	ModTime time.Time // when the backend stored it (the backend's clock)
}

// VolatilePutter is implemented by backends that store an object faster
// when it need not survive a crash of the machine (the fs backend skips its
// fsyncs). PutVolatile is otherwise Put: atomic for readers, create-only.
// A repository uses it only for advisory objects (claims, see
// repo/claims.go); wrappers need not pass it through.
type VolatilePutter interface {
	PutVolatile(ctx context.Context, key string, data []byte) error
}

// Backend is the storage a repository lives on.
//
// All methods are safe for concurrent use by multiple goroutines and honour
// context cancellation.
type Backend interface {
	// Put stores data under key, atomically: a reader sees the whole
	// object or none of it, also after a crash. Put never overwrites: if
	// key exists, Put returns an error wrapping ErrExists and leaves the
	// existing object untouched. Put does not retain data after it returns.
	Put(ctx context.Context, key string, data []byte) error

	// Get returns length bytes of key starting at offset; length < 0 means
	// to the end of the object. A range that starts beyond the end of the
	// object, or a positive length that runs past it, is ErrInvalidRange;
	// so is a negative offset. offset == size with length 0 or < 0 is an
	// empty range, not an error. A missing key is ErrNotFound whatever the
	// range. The caller must Close the reader.
	Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)

	// Stat describes key, or returns an error wrapping ErrNotFound.
	Stat(ctx context.Context, key string) (ObjectInfo, error)

	// List calls fn for every object whose key starts with prefix, in no
	// particular order, from one goroutine at a time and never after List
	// returns. An error from fn stops the listing and is returned.
	// Objects put or deleted during the listing may or may not be seen.
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error

	// Delete removes key. Deleting a missing key returns an error wrapping
	// ErrNotFound.
	Delete(ctx context.Context, key string) error

	// Close releases the backend's resources.
	Close() error
}

// ReadAll is Get followed by reading everything: a convenience for the small
// objects (config, keys, index files, snapshots) that fit in memory, and for
// pack ranges. With length >= 0 it allocates exactly length bytes once, and a
// body shorter than length is io.ErrUnexpectedEOF, a longer one an error.
func ReadAll(ctx context.Context, be Backend, key string, offset, length int64) ([]byte, error) {
	return ReadInto(ctx, be, key, offset, length, nil)
}

// ReadInto is ReadAll into buf, reused when its capacity suffices (a
// positive length only), so that a caller reading many ranges does not
// allocate, and fault in, fresh memory for each. The result aliases buf
// then.
func ReadInto(ctx context.Context, be Backend, key string, offset, length int64, buf []byte) ([]byte, error) {
	rc, err := be.Get(ctx, key, offset, length)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if length < 0 {
		return io.ReadAll(rc)
	}
	if int64(cap(buf)) >= length {
		buf = buf[:length]
	} else {
		buf = make([]byte, length)
	}
	if _, err := io.ReadFull(rc, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	// The body must end where asked: probe for one byte more.
	var probe [1]byte
	switch n, err := io.ReadFull(rc, probe[:]); {
	case n > 0:
		return nil, fmt.Errorf("backend: get %q: body longer than the %d bytes asked for", key, length)
	case err != io.EOF:
		return nil, err
	}
	return buf, nil
}
