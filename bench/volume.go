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
	// A duplicate needs earlier data to copy: swap a duplicate that comes
	// before any data with the next data region, or make it random data
	// when the volume has none.
	isData := func(c Class) bool { return c == Random || c == File }
	for i, c := range classes {
		if isData(c) {
			break
		}
		if c != Duplicate {
			continue
		}
		j := slices.IndexFunc(classes[i:], isData)
		if j < 0 {
			classes[i] = Random
		} else {
			classes[i], classes[i+j] = classes[i+j], classes[i]
		}
		break
	}
	return classes, nil
}

func (s Spec) region() int64 {
	if s.RegionSize > 0 {
		return s.RegionSize
	}
	return 4 << 20
}

// Corpus streams real file data for File regions: the regular files under
// some directories, taken in turn from each directory (so their mix is even
// along the volume), in path order, wrapping around at the end. A Corpus is
// not safe for concurrent use.
type Corpus struct {
	lists [][]string // per directory, sorted paths
	next  []int      // next file per directory
	turn  int
	buf   []byte
	total int64
}

// NewCorpus lists the regular files under dirs. Directories that do not
// exist are skipped; at least one file must be found.
func NewCorpus(dirs ...string) (*Corpus, error) {
	c := &Corpus{}
	for _, dir := range dirs {
		var files []string
		filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				if fi, err := d.Info(); err == nil && fi.Size() > 0 {
					files = append(files, path)
					c.total += fi.Size()
				}
			}
			return nil
		})
		if len(files) > 0 {
			slices.Sort(files)
			c.lists = append(c.lists, files)
		}
	}
	if len(c.lists) == 0 {
		return nil, fmt.Errorf("corpus %v holds no readable files", dirs)
	}
	c.next = make([]int, len(c.lists))
	return c, nil
}

// DefaultCorpusDirs are real files found on any Debian machine with Go:
// source code (about 4× compressible with zstd), shared data and binaries
// (about 2×).
func DefaultCorpusDirs(goroot string) []string {
	return []string{filepath.Join(goroot, "src"), "/usr/share", "/usr/lib", "/usr/bin", filepath.Join(goroot, "pkg")}
}

// Size returns the corpus's size in bytes before it wraps around.
func (c *Corpus) Size() int64 { return c.total }

// Read fills p with the next corpus bytes; it never returns an error once
// a file was found, since the corpus wraps around.
func (c *Corpus) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(c.buf) == 0 {
			c.load()
			if len(c.buf) == 0 {
				return n, io.ErrNoProgress
			}
		}
		k := copy(p[n:], c.buf)
		c.buf = c.buf[k:]
		n += k
	}
	return n, nil
}

func (c *Corpus) exhausted() bool {
	for d, files := range c.lists {
		if c.next[d] < len(files) {
			return false
		}
	}
	return true
}

func (c *Corpus) load() {
	for tries := 0; tries < 2*len(c.lists) && len(c.buf) == 0; tries++ {
		d := c.turn % len(c.lists)
		c.turn++
		files := c.lists[d]
		if c.next[d] >= len(files) {
			if c.exhausted() {
				clear(c.next) // every directory used up: wrap around
			}
			continue
		}
		b, err := os.ReadFile(files[c.next[d]])
		c.next[d]++
		if err == nil {
			c.buf = b
		}
	}
}

// Volume is what Generate writes to: a file or block device.
type Volume interface {
	io.ReaderAt
	io.WriterAt
}

// Generate writes the volume of spec to v, region by region. File regions
// take consecutive bytes of corpus; a duplicate region is an earlier random
// or file region rotated by an odd number of bytes. Zero regions are
// punched as holes in regular files and written as zeros otherwise, so the
// result is the same on a reused device. It returns the layout.
func Generate(ctx context.Context, v Volume, spec Spec, corpus io.Reader) ([]Class, error) {
	classes, err := spec.Layout()
	if err != nil {
		return nil, err
	}
	if slices.Contains(classes, File) && corpus == nil {
		return nil, errors.New("a volume with file data needs a corpus")
	}
	r := spec.region()
	buf := make([]byte, r)
	zeros := make([]byte, r)
	rng := rand.New(rand.NewPCG(spec.Seed, 0xb10c))
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
			if _, err := io.ReadFull(corpus, b); err != nil {
				return nil, fmt.Errorf("reading the corpus: %w", err)
			}
		case Duplicate:
			// A rotated copy of an earlier data region: the same bytes at
			// an unaligned shift.
			var data []int
			for j := range i {
				if classes[j] == Random || classes[j] == File {
					data = append(data, j)
				}
			}
			j := data[rng.IntN(len(data))]
			shift := int64(0)
			if n > 2 {
				shift = min(n-1, (1+rng.Int64N(n-2))|1) // odd: never block-aligned
			}
			if _, err := v.ReadAt(b[:n-shift], int64(j)*r+shift); err != nil {
				return nil, fmt.Errorf("reading back for a duplicate: %w", err)
			}
			if _, err := v.ReadAt(b[n-shift:], int64(j)*r); err != nil {
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
