package changes

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"runtime"
	"sync/atomic"

	"golang.org/x/sync/errgroup"
)

// DiffOptions tune Diff.
type DiffOptions struct {
	// BlockSize is the granularity of the comparison (default 64 KiB, at
	// most 64 MiB): a changed byte marks its whole block changed.
	BlockSize int64
	// Workers compare in parallel (default GOMAXPROCS); each holds two
	// reads of ReadSize bytes (default 4 MiB, at most 256 MiB, rounded
	// down to a multiple of BlockSize).
	Workers  int
	ReadSize int64
}

// Upper bounds of DiffOptions: memory is two reads per worker.
const (
	maxDiffBlock = 64 << 20
	maxDiffRead  = 256 << 20
)

// Volume is a device or image file that Diff compares: read at offsets,
// in parallel (the io.ReaderAt contract), Size bytes long. mover.Source is
// the same interface, so every mover device is a Volume.
type Volume interface {
	io.ReaderAt
	Size() int64
}

// Diff compares two devices and returns the extents where target differs
// from base, for storage without changed-block tracking. A target larger
// than base counts its tail as changed; a smaller one is an error. Reads
// are large and aligned, spread over workers; memory is two read buffers
// per worker. A read range that both sources report as a hole (a NextData
// method, as chunk.Sparse has: holes of sparse image files) is equal
// without being read.
func Diff(ctx context.Context, base, target Volume, opts DiffOptions) (ChangeList, error) {
	bs, ts := base.Size(), target.Size()
	if ts < bs {
		return nil, fmt.Errorf("diff: target has %d bytes, fewer than the base's %d", ts, bs)
	}
	if opts.BlockSize > maxDiffBlock || opts.ReadSize > maxDiffRead {
		return nil, fmt.Errorf("diff: block size %d, read size %d: want at most %d and %d", opts.BlockSize, opts.ReadSize, maxDiffBlock, maxDiffRead)
	}
	if opts.BlockSize <= 0 {
		opts.BlockSize = 64 << 10
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.ReadSize <= 0 {
		opts.ReadSize = 4 << 20
	}
	rs := max(opts.BlockSize, opts.ReadSize/opts.BlockSize*opts.BlockSize)
	// No read larger than the device, and no idle workers holding buffers.
	rs = min(rs, max(opts.BlockSize, (bs+opts.BlockSize-1)/opts.BlockSize*opts.BlockSize))
	n := (bs + rs - 1) / rs
	// found[i] holds the changed extents of read i, runs of changed blocks
	// merged as they are found, so memory follows the number of separate
	// changes rather than of changed blocks.
	found := make([][]Extent, n)
	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for range min(int64(opts.Workers), max(n, 1)) {
		g.Go(func() (err error) {
			// A panic in a reader (a bug) fails the diff instead of the
			// process (which would exit 2, the usage code).
			defer func() {
				if v := recover(); v != nil {
					err = fmt.Errorf("diff: internal error: panic: %v", v)
				}
			}()
			a, b := make([]byte, rs), make([]byte, rs)
			for {
				i := next.Add(1) - 1
				if i >= n {
					return nil
				}
				if err := gctx.Err(); err != nil {
					return err
				}
				off := i * rs
				l := min(rs, bs-off)
				if zeroInBoth(base, target, off, l) {
					continue
				}
				if err := readFull(base, a[:l], off); err != nil {
					return fmt.Errorf("diff: reading base at %d: %w", off, err)
				}
				if err := readFull(target, b[:l], off); err != nil {
					return fmt.Errorf("diff: reading target at %d: %w", off, err)
				}
				for s := int64(0); s < l; s += opts.BlockSize {
					e := min(s+opts.BlockSize, l)
					if !bytes.Equal(a[s:e], b[s:e]) {
						found[i] = appendMerged(found[i], Extent{Offset: off + s, Length: e - s})
					}
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	// The reads are in order: joining them needs no sort.
	var all ChangeList
	for i, f := range found {
		for _, e := range f {
			all = appendMerged(all, e)
		}
		found[i] = nil
	}
	if ts > bs {
		all = appendMerged(all, Extent{Offset: bs, Length: ts - bs})
	}
	if all == nil {
		all = ChangeList{}
	}
	return all, nil
}

// sparse is chunk.Sparse, declared here so that changes need not import
// chunk: NextData returns the first range [start, end) with end > off that
// may hold data, with start >= off; bytes in [off, start) are zeros.
type sparse interface {
	NextData(off int64) (start, end int64, err error)
}

// zeroInBoth reports whether [off, off+n) reads as zeros in both sources
// by what they say without reading (sparse: holes of sparse files), so it
// need not be read to be compared.
func zeroInBoth(a, b Volume, off, n int64) bool {
	for _, s := range []Volume{a, b} {
		sp, ok := s.(sparse)
		if !ok {
			return false
		}
		start, end, err := sp.NextData(off)
		if err != nil || start < end && start < off+n {
			return false
		}
	}
	return true
}

func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}
