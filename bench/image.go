package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"

	"github.com/blockmover/blockmover/internal/safego"
	"github.com/blockmover/blockmover/mover"
	"golang.org/x/sys/unix"
)

// Zeroer is a destination that can make a range read as zeros cheaply
// (mover.Device: a punched hole in a file, BLKZEROOUT on a device).
type Zeroer interface {
	Zero(off, n int64) error
}

// Generate writes the volume of spec to dst and returns its layout. File
// regions take consecutive bytes of the corpus; a duplicate region is
// another data region rotated by an odd number of bytes. Zero regions are
// made zero (punched as holes in a regular file, written as zeros on
// anything else), so the result is the same on a reused device. A regular
// file shorter than the volume is extended.
func Generate(ctx context.Context, dst io.WriterAt, spec Spec, corpus *Corpus) ([]Region, error) {
	v, err := NewVolume(spec, corpus)
	if err != nil {
		return nil, err
	}
	if err := v.CopyTo(ctx, dst); err != nil {
		return nil, err
	}
	return v.Regions(), nil
}

// CopyTo writes the whole volume to dst (see Generate). Pieces are
// computed and written by GOMAXPROCS goroutines.
func (v *Volume) CopyTo(ctx context.Context, dst io.WriterAt) error {
	return writeImage(ctx, v, v.spec.Size, v.dataRanges(), dst)
}

// writeImage writes src's bytes in data to dst and zeroes the rest of
// [0, size).
func writeImage(ctx context.Context, src io.ReaderAt, size int64, data []span, dst io.WriterAt) error {
	z := zeroerFor(dst)
	if f, ok := dst.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && fi.Size() < size {
			if err := f.Truncate(size); err != nil {
				return fmt.Errorf("sizing %s: %w", f.Name(), err)
			}
		}
	}
	var zeros []span
	at := int64(0)
	for _, d := range data {
		if d.start > at {
			zeros = append(zeros, span{at, d.start})
		}
		at = d.end
	}
	if at < size {
		zeros = append(zeros, span{at, size})
	}
	for _, s := range zeros {
		if err := z.Zero(s.start, s.end-s.start); err != nil {
			return err
		}
	}
	return copyRanges(ctx, src, data, dst)
}

// copyRanges copies the ranges from src to dst in 4 MiB pieces, in
// parallel.
func copyRanges(ctx context.Context, src io.ReaderAt, ranges []span, dst io.WriterAt) error {
	const piece = 4 << 20
	g, gctx := safego.WithContext(ctx)
	work := make(chan span)
	g.Go(func() error {
		defer close(work)
		for _, r := range ranges {
			for off := r.start; off < r.end; off += piece {
				select {
				case work <- span{off, min(off+piece, r.end)}:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
		}
		return nil
	})
	for range runtime.GOMAXPROCS(0) {
		g.Go(func() error {
			buf := make([]byte, piece)
			for s := range work {
				b := buf[:s.end-s.start]
				if _, err := src.ReadAt(b, s.start); err != nil && !errors.Is(err, io.EOF) {
					return fmt.Errorf("computing bytes at %d: %w", s.start, err)
				}
				if _, err := dst.WriteAt(b, s.start); err != nil {
					return fmt.Errorf("writing at %d: %w", s.start, err)
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// zeroerFor returns how to zero ranges of dst: its own Zero method, hole
// punching for a regular file (written zeros where the filesystem cannot
// punch), written zeros otherwise.
func zeroerFor(dst io.WriterAt) Zeroer {
	if z, ok := dst.(Zeroer); ok {
		return z
	}
	if f, ok := dst.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			return punchZeroer{f}
		}
	}
	return writeZeroer{dst}
}

type punchZeroer struct{ f *os.File }

func (p punchZeroer) Zero(off, n int64) error {
	err := unix.Fallocate(int(p.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if err == nil {
		return nil
	}
	return writeZeroer{p.f}.Zero(off, n)
}

type writeZeroer struct{ w io.WriterAt }

func (w writeZeroer) Zero(off, n int64) error {
	z := make([]byte, min(n, 4<<20))
	for n > 0 {
		k := min(n, int64(len(z)))
		if _, err := w.w.WriteAt(z[:k], off); err != nil {
			return fmt.Errorf("writing zeros at %d: %w", off, err)
		}
		off += k
		n -= k
	}
	return nil
}

// Compare reads size bytes of got and want in 4 MiB pieces, in parallel,
// and returns an error naming the first differing piece found.
func Compare(ctx context.Context, got, want io.ReaderAt, size int64) error {
	const piece = 4 << 20
	g, gctx := safego.WithContext(ctx)
	work := make(chan int64)
	g.Go(func() error {
		defer close(work)
		for off := int64(0); off < size; off += piece {
			select {
			case work <- off:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	for range runtime.GOMAXPROCS(0) {
		g.Go(func() error {
			a, b := make([]byte, piece), make([]byte, piece)
			for off := range work {
				n := min(piece, size-off)
				if _, err := got.ReadAt(a[:n], off); err != nil && !errors.Is(err, io.EOF) {
					return fmt.Errorf("reading at %d: %w", off, err)
				}
				if _, err := want.ReadAt(b[:n], off); err != nil && !errors.Is(err, io.EOF) {
					return fmt.Errorf("computing bytes at %d: %w", off, err)
				}
				if !bytes.Equal(a[:n], b[:n]) {
					return fmt.Errorf("%w: the %d bytes at offset %d differ", ErrMismatch, n, off)
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// ErrMismatch: a restored volume differs from the scenario.
var ErrMismatch = errors.New("restored volume differs from the source")

// sparseSource is a source that tells where its data is (chunk.Sparse),
// as a sparse file does: the exporter never reads its zero ranges.
type sparseSource struct {
	src  mover.Source
	data []span
}

func (s sparseSource) ReadAt(p []byte, off int64) (int, error) { return s.src.ReadAt(p, off) }
func (s sparseSource) Size() int64                             { return s.src.Size() }

// NextData implements chunk.Sparse.
func (s sparseSource) NextData(off int64) (start, end int64, err error) {
	if i := sort.Search(len(s.data), func(i int) bool { return s.data[i].end > off }); i < len(s.data) {
		return max(s.data[i].start, off), s.data[i].end, nil
	}
	size := s.src.Size()
	return max(off, size), max(off, size), nil
}

// Sparse returns the volume as a source that reports its zero regions the
// way a sparse file reports holes (or a CSI allocation map its unallocated
// ranges), so an export never reads them. Without it, zero regions are
// read and checked like a block device's.
func (v *Volume) Sparse() mover.Source { return sparseSource{v, v.dataRanges()} }

// GenerateFile writes the volume of spec to path, fsynced. With create the
// file is created (an existing path is refused) and sized, and removed
// again if generating fails; without, path (a file or block device of at
// least spec.Size bytes) is overwritten in place. It returns the layout.
func GenerateFile(ctx context.Context, path string, spec Spec, corpus *Corpus, create bool) ([]Region, error) {
	flags := os.O_RDWR
	if create {
		flags |= os.O_CREATE | os.O_EXCL
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if err != nil {
		return nil, err
	}
	fail := func(err error) ([]Region, error) {
		f.Close()
		if create {
			os.Remove(path)
		}
		return nil, err
	}
	if create {
		if err := f.Truncate(spec.Size); err != nil {
			return fail(err)
		}
	}
	regions, err := Generate(ctx, f, spec, corpus)
	if err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return regions, nil
}
