//go:build unix

package fs

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/blockmover/blockmover/repo/backend"
)

// MapRange implements backend.Mapper: the range of the object's file is
// mapped read-only and shared, read ahead (MADV_WILLNEED), and the file
// closed; the mapping stays valid if the object is deleted meanwhile.
// A file system that cannot map files gives errors.ErrUnsupported.
func (b *Backend) MapRange(ctx context.Context, key string, offset, length int64) ([]byte, func() error, error) {
	name, err := b.path(ctx, backend.OpGet, key)
	if err != nil {
		return nil, nil, err
	}
	if length <= 0 {
		return nil, nil, fmt.Errorf("fs: map %q: a range of %d bytes: %w", key, length, errors.ErrUnsupported)
	}
	f, size, err := openObject(name)
	if err != nil {
		if notFound(err) {
			return nil, nil, fmt.Errorf("fs: map %q: %w", key, backend.ErrNotFound)
		}
		return nil, nil, fmt.Errorf("fs: map %q: %w", key, classify(err))
	}
	defer f.Close()
	if offset < 0 || offset > size || length > size-offset {
		return nil, nil, fmt.Errorf("fs: map %q: %w: offset %d length %d in object of %d bytes",
			key, backend.ErrInvalidRange, offset, length, size)
	}
	start := offset &^ int64(os.Getpagesize()-1)
	mem, err := unix.Mmap(int(f.Fd()), start, int(offset+length-start), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, fmt.Errorf("fs: map %q: %w: %w", key, errors.ErrUnsupported, err)
	}
	// Advice: read the whole range ahead at once, as a read of it would
	// (page faults alone read around each fault, 128 KiB at a time).
	_ = unix.Madvise(mem, unix.MADV_WILLNEED)
	return mem[offset-start:], func() error { return unix.Munmap(mem) }, nil
}
