package mover_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blockmover/blockmover/chunk"
	"github.com/blockmover/blockmover/mover"
	"golang.org/x/sys/unix"
)

// readerOnly hides a Device's MapRange: the cutter reads it with ReadAt.
type readerOnly struct{ io.ReaderAt }

// mapOnly is a Device's ReadAt and MapRange, without its Sparse.
type mapOnly struct{ d *mover.Device }

func (m mapOnly) ReadAt(p []byte, off int64) (int, error) { return m.d.ReadAt(p, off) }
func (m mapOnly) MapRange(off, n int64) ([]byte, func(), error) {
	return m.d.MapRange(off, n)
}

// cutAll cuts every segment of a volume of size bytes from src and returns
// the pieces, data copied.
func cutAll(t *testing.T, p chunk.Params, src io.ReaderAt, size int64) []chunk.Piece {
	t.Helper()
	c, err := chunk.NewCutter(p, chunk.Options{ReadSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	var out []chunk.Piece
	for i := int64(0); i*p.SegmentSize < size; i++ {
		start, end := p.SegmentRange(size, i)
		if err := c.Cut(context.Background(), src, start, end, func(pc chunk.Piece) error {
			pc.Data = bytes.Clone(pc.Data)
			out = append(out, pc)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestCutMappedSource: a Device is cut through its mappings (chunk.Mapper)
// into exactly the pieces a read of the same bytes gives, holes included,
// whether its pages are dropped after or kept.
func TestCutMappedSource(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.img")
	const size = 24<<20 + 12345 // the last window is short and unaligned
	writeRandom(t, path, size, 11)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A zeroed stretch in the middle, and a hole.
	if _, err := f.WriteAt(make([]byte, 3<<20), 5<<20); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 12<<20, 2<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	p := chunk.DefaultParams(0x3DA3358B4DC173)
	p.SegmentSize = 8 << 20
	for _, drop := range []bool{false, true} {
		d, err := mover.OpenSource(path, drop)
		if err != nil {
			t.Fatal(err)
		}
		var _ chunk.Mapper = d
		mapped := cutAll(t, p, d, size)
		read := cutAll(t, p, readerOnly{d}, size)
		d.Close()
		if len(mapped) != len(read) {
			t.Fatalf("drop %v: %d pieces mapped, %d read", drop, len(mapped), len(read))
		}
		var holes int
		for i := range mapped {
			m, r := mapped[i], read[i]
			if m.Offset != r.Offset || m.Length != r.Length || m.Hole != r.Hole || !bytes.Equal(m.Data, r.Data) {
				t.Fatalf("drop %v: piece %d: mapped %d+%d hole %v, read %d+%d hole %v (data equal %v)",
					drop, i, m.Offset, m.Length, m.Hole, r.Offset, r.Length, r.Hole, bytes.Equal(m.Data, r.Data))
			}
			if m.Hole {
				holes++
			}
		}
		if holes == 0 {
			t.Fatalf("drop %v: no hole among %d pieces", drop, len(mapped))
		}
	}
}

// TestCutMappedSourceShrunk: a source file truncated after it was opened
// faults where the mapping reaches past its new end; the cut returns an
// error (no crash), and the process goes on.
func TestCutMappedSourceShrunk(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.img")
	const size = 16 << 20
	writeRandom(t, path, size, 12)
	d, err := mover.OpenSource(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := os.Truncate(path, 1<<20); err != nil {
		t.Fatal(err)
	}
	p := chunk.DefaultParams(0x3DA3358B4DC173)
	p.SegmentSize = size
	c, err := chunk.NewCutter(p, chunk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Not sparse (a Device would report the cut-off part as a hole).
	src := mapOnly{d}
	err = c.Cut(context.Background(), src, 0, size, func(chunk.Piece) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "at 1048576 through its mapping faulted") {
		t.Fatalf("cutting a source truncated under its mapping: %v", err)
	}
	t.Log(err)
	// The cutter is usable after the fault.
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	if err := c.Cut(context.Background(), src, 0, size, func(chunk.Piece) error { return nil }); err != nil {
		t.Fatalf("cutting again: %v", err)
	}
}

// writeRandom writes size random bytes to a new file at path.
func writeRandom(t *testing.T, path string, size int, seed uint64) {
	t.Helper()
	b := make([]byte, size)
	fillRand(newRand(seed), b)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
