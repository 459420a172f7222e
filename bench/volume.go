// Package bench measures blockmover: synthetic volumes with chosen
// fractions of zeros, duplicates, real file data and random data, and the
// runs and reports built on them.
package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
)

// Class is the kind of content of one region of a synthetic volume.
type Class uint8

// Region classes.
const (
	Random    Class = iota // incompressible, never repeated
	Zero                   // all zeros (a hole)
	File                   // real file data from the corpus
	Duplicate              // a copy of earlier non-zero bytes at an unaligned shift
)

func (c Class) String() string {
	return [...]string{"random", "zero", "file", "duplicate"}[c]
}

// Spec defines a synthetic volume. The same Spec and corpus always give the
// same bytes.
type Spec struct {
	Size int64
	Seed uint64
	// Fractions of the volume; what they leave is random data.
	Zero, File, Duplicate float64
	// RegionSize is the granularity at which classes alternate (default
	// 4 MiB).
	RegionSize int64
}

// Layout returns the class of each region, with exact counts shuffled by
// the seed.
func (s Spec) Layout() ([]Class, error) {
	r := s.region()
	n := int((s.Size + r - 1) / r)
	if s.Zero < 0 || s.File < 0 || s.Duplicate < 0 || s.Zero+s.File+s.Duplicate > 1+1e-9 {
		return nil, fmt.Errorf("volume fractions zero %.2f file %.2f duplicate %.2f must be ≥ 0 and add up to at most 1", s.Zero, s.File, s.Duplicate)
	}
	count := func(f float64) int { return int(f*float64(n) + 0.5) }
	classes := make([]Class, 0, n)
	for _, c := range []struct {
		c Class
		n int
	}{{Zero, count(s.Zero)}, {File, count(s.File)}, {Duplicate, count(s.Duplicate)}} {
		for range min(c.n, n-len(classes)) {
			classes = append(classes, c.c)
		}
	}
	for len(classes) < n {
		classes = append(classes, Random)
	}
	rng := rand.New(rand.NewPCG(s.Seed, 0x5eed))
	rng.Shuffle(len(classes), func(i, j int) { classes[i], classes[j] = classes[j], classes[i] })
	// A duplicate needs earlier data to copy: the first region never is.
	if len(classes) > 0 && classes[0] == Duplicate {
		for i := range classes {
			if classes[i] == Random || classes[i] == File {
				classes[0], classes[i] = classes[i], classes[0]
				break
			}
		}
	}
	return classes, nil
}

func (s Spec) region() int64 {
	if s.RegionSize > 0 {
		return s.RegionSize
	}
	return 4 << 20
}

// LoadCorpus reads regular files under dir, in path order, until max bytes:
// real file data for File regions. (Go's own source tree, about 2.6×
// compressible with zstd, is a convenient corpus.)
func LoadCorpus(dir string, max int64) ([]byte, error) {
	var out []byte
	errFull := errors.New("full")
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		out = append(out, b[:min(int64(len(b)), max-int64(len(out)))]...)
		if int64(len(out)) >= max {
			return errFull
		}
		return nil
	})
	if err != nil && !errors.Is(err, errFull) {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("corpus %s holds no readable files", dir)
	}
	return out, nil
}

// Volume is what Generate writes to: a file or block device.
type Volume interface {
	io.ReaderAt
	io.WriterAt
}

// Generate writes the volume of spec to v, region by region. File regions
// take consecutive slices of corpus (wrapping around); duplicate regions
// copy earlier bytes of v from an unaligned offset. Zero regions are
// punched as holes in regular files and written as zeros otherwise, so the
// result is the same on a reused device. It returns the layout.
func Generate(ctx context.Context, v Volume, spec Spec, corpus []byte) ([]Class, error) {
	classes, err := spec.Layout()
	if err != nil {
		return nil, err
	}
	if slices.Contains(classes, File) && len(corpus) == 0 {
		return nil, errors.New("a volume with file data needs a corpus")
	}
	r := spec.region()
	buf := make([]byte, r)
	zeros := make([]byte, r)
	rng := rand.New(rand.NewPCG(spec.Seed, 0xb10c))
	var corpusPos int64
	f, _ := v.(*os.File)
	for i, c := range classes {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		off := int64(i) * r
		n := min(r, spec.Size-off)
		b := buf[:n]
		switch c {
		case Random:
			for j := 0; j+8 <= len(b); j += 8 {
				binary.LittleEndian.PutUint64(b[j:], rng.Uint64())
			}
			for j := len(b) &^ 7; j < len(b); j++ {
				b[j] = byte(rng.Uint32())
			}
		case File:
			for j := 0; j < len(b); {
				k := copy(b[j:], corpus[corpusPos:])
				j += k
				corpusPos = (corpusPos + int64(k)) % int64(len(corpus))
			}
		case Duplicate:
			src := rng.Int64N(max(1, off-n))
			src += 1 + rng.Int64N(4095) // never 4 KiB aligned
			src = min(src, off-n)
			if src < 0 {
				src = 0
			}
			if _, err := v.ReadAt(b, src); err != nil {
				return nil, fmt.Errorf("reading back for a duplicate: %w", err)
			}
		case Zero:
			if f != nil {
				if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
					if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n); err == nil {
						if fi.Size() < off+n {
							if err := f.Truncate(off + n); err != nil {
								return nil, err
							}
						}
						continue
					}
				}
			}
			b = zeros[:n]
		}
		if _, err := v.WriteAt(b, off); err != nil {
			return nil, fmt.Errorf("writing region %d: %w", i, err)
		}
	}
	return classes, nil
}
