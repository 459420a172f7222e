package mover_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/blockmover/blockmover/mover"
)

// naiveDiff is the model for Diff: compare block by block, merge runs.
func naiveDiff(base, target []byte, bs int64) mover.ChangeList {
	var out mover.ChangeList
	add := func(off, n int64) {
		if k := len(out); k > 0 && out[k-1].End() == off {
			out[k-1].Length += n
			return
		}
		out = append(out, mover.Extent{Offset: off, Length: n})
	}
	for off := int64(0); off < int64(len(base)); off += bs {
		end := min(off+bs, int64(len(base)))
		if !bytes.Equal(base[off:end], target[off:end]) {
			add(off, end-off)
		}
	}
	if len(target) > len(base) {
		add(int64(len(base)), int64(len(target)-len(base)))
	}
	return out
}

// TestDiffShapes compares Diff with the model on in-memory devices of odd
// sizes, block sizes that do or do not divide the read size, more workers
// than reads, changes at both edges, changes to zeros, and a grown target.
func TestDiffShapes(t *testing.T) {
	r := newRand(7)
	tests := []struct {
		name   string
		size   int64
		grow   int64
		opts   mover.DiffOptions
		change func(b []byte)
	}{
		{"identical", 3<<20 + 123, 0, mover.DiffOptions{}, func([]byte) {}},
		{"first byte", 1 << 20, 0, mover.DiffOptions{BlockSize: 4096, ReadSize: 64 << 10}, func(b []byte) { b[0] ^= 1 }},
		{"last byte, odd size", 1<<20 + 4097, 0, mover.DiffOptions{BlockSize: 4096, ReadSize: 64 << 10}, func(b []byte) { b[len(b)-1] ^= 1 }},
		{"last byte, one short block", 4097, 0, mover.DiffOptions{BlockSize: 4096}, func(b []byte) { b[4096] ^= 0x80 }},
		{"to zeros across reads", 2 << 20, 0, mover.DiffOptions{BlockSize: 4096, ReadSize: 64 << 10}, func(b []byte) { clear(b[60<<10 : 300<<10]) }},
		{"everything", 1 << 20, 0, mover.DiffOptions{BlockSize: 512, ReadSize: 8 << 10, Workers: 3}, func(b []byte) {
			for i := range b {
				b[i] ^= 0xff
			}
		}},
		{"block larger than read", 1 << 20, 0, mover.DiffOptions{BlockSize: 256 << 10, ReadSize: 4096}, func(b []byte) { b[300<<10] ^= 1 }},
		{"read not a multiple of block", 1 << 20, 0, mover.DiffOptions{BlockSize: 3000, ReadSize: 10000}, func(b []byte) {
			b[2999] ^= 1
			b[3000] ^= 1
			b[9999] ^= 1
			b[10000] ^= 1
		}},
		{"more workers than reads", 100 << 10, 0, mover.DiffOptions{Workers: 64}, func(b []byte) { b[70<<10] ^= 1 }},
		{"scattered", 4 << 20, 0, mover.DiffOptions{BlockSize: 4096, ReadSize: 128 << 10}, func(b []byte) {
			for range 200 {
				b[r.IntN(len(b))] ^= 1
			}
		}},
		{"grown target", 1 << 20, 12345, mover.DiffOptions{}, func(b []byte) { b[5] ^= 1 }},
		{"grown target, last base block changed", 1 << 20, 1, mover.DiffOptions{}, func(b []byte) { b[1<<20-1] ^= 1 }},
		{"empty base", 0, 4096, mover.DiffOptions{}, func([]byte) {}},
		{"both empty", 0, 0, mover.DiffOptions{}, func([]byte) {}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := make([]byte, tc.size)
			fillRand(r, base)
			target := append(bytes.Clone(base), make([]byte, tc.grow)...)
			tc.change(target[:tc.size])
			bs := tc.opts.BlockSize
			if bs == 0 {
				bs = 64 << 10
			}
			want := naiveDiff(base, target, bs)
			got, err := mover.Diff(context.Background(), &memSource{b: base}, &memSource{b: target}, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("Diff = %v, want %v", got, want)
			}
			if err := got.Validate(int64(len(target))); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestDiffLoopDevices compares two real block devices (files where loop
// devices cannot be had), opened as mover diff opens them.
func TestDiffLoopDevices(t *testing.T) {
	const size = 16 << 20
	a, b := loopDevice(t, size), loopDevice(t, size)
	fillRandom(t, a, size, 11)
	data := make([]byte, size)
	src, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.ReadAt(data, 0); err != nil {
		t.Fatal(err)
	}
	src.Close()
	data[0] ^= 1                          // first byte
	data[size-1] ^= 1                     // last byte
	clear(data[3<<20+100 : 3<<20+70_000]) // a run that became zeros, over two blocks
	data[8<<20] ^= 0x40                   // first byte of a block
	data[8<<20-1] ^= 0x40                 // last byte of the block before
	diffWriteFile(t, b, data)

	base, err := mover.OpenSource(a, true)
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	target, err := mover.OpenSource(b, true)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	const k = 64 << 10
	got, err := mover.Diff(context.Background(), base, target, mover.DiffOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := mover.ChangeList{{0, k}, {3 << 20, 2 * k}, {8<<20 - k, 2 * k}, {size - k, k}}
	if !slices.Equal(got, want) {
		t.Fatalf("Diff = %v, want %v", got, want)
	}
	if base.ReadBytes() != size || target.ReadBytes() != size {
		t.Errorf("read %d and %d bytes of %d", base.ReadBytes(), target.ReadBytes(), size)
	}
	// 4 KiB blocks find the edits to within a page.
	got, err = mover.Diff(context.Background(), base, target, mover.DiffOptions{BlockSize: 4096, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	want = mover.ChangeList{{0, 4096}, {3 << 20, 18 * 4096}, {8<<20 - 4096, 2 * 4096}, {size - 4096, 4096}}
	if !slices.Equal(got, want) {
		t.Fatalf("Diff with 4 KiB blocks = %v, want %v", got, want)
	}
	// A device against itself.
	got, err = mover.Diff(context.Background(), base, base, mover.DiffOptions{})
	if err != nil || len(got) != 0 {
		t.Fatalf("Diff of a device with itself = %v, %v", got, err)
	}
}

func diffWriteFile(t *testing.T, path string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// diffFailingSource fails every read at or past failAt.
type diffFailingSource struct {
	memSource
	failAt int64
	err    error
}

func (f *diffFailingSource) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.failAt {
		return 0, f.err
	}
	return f.memSource.ReadAt(p, off)
}

// diffShortSource claims more bytes than it holds: a device that shrank.
type diffShortSource struct {
	memSource
	claim int64
}

func (s *diffShortSource) Size() int64 { return s.claim }
func (s *diffShortSource) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(s.b)) {
		return 0, nil // a misbehaving reader: no bytes, no error
	}
	return s.memSource.ReadAt(p, off)
}

func TestDiffErrors(t *testing.T) {
	ctx := context.Background()
	img := make([]byte, 1<<20)
	fillRand(newRand(3), img)
	small := &memSource{b: img[:1<<19]}
	full := &memSource{b: img}

	if _, err := mover.Diff(ctx, full, small, mover.DiffOptions{}); err == nil {
		t.Error("a target smaller than the base: no error")
	}

	eio := errors.New("input/output error")
	_, err := mover.Diff(ctx, full, &diffFailingSource{memSource: memSource{b: img}, failAt: 700 << 10, err: eio}, mover.DiffOptions{BlockSize: 4096, ReadSize: 64 << 10})
	if !errors.Is(err, eio) {
		t.Errorf("a failing target: %v", err)
	}
	_, err = mover.Diff(ctx, &diffFailingSource{memSource: memSource{b: img}, failAt: 0, err: eio}, full, mover.DiffOptions{})
	if !errors.Is(err, eio) {
		t.Errorf("a failing base: %v", err)
	}

	_, err = mover.Diff(ctx, &diffShortSource{memSource: memSource{b: img[:1000]}, claim: 1 << 20}, full, mover.DiffOptions{})
	if err == nil {
		t.Error("a base shorter than its size: no error")
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := mover.Diff(cctx, full, full, mover.DiffOptions{ReadSize: 4096, BlockSize: 4096}); !errors.Is(err, context.Canceled) {
		t.Errorf("a canceled context: %v", err)
	}
}

// TestDiffFiles: image files (sparse and not) compare like devices.
func TestDiffFiles(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	const size = 5<<20 + 512
	// a is sparse; b holds the same zeros written out, plus one change.
	if err := os.WriteFile(a, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(a, size); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, size)
	data[size-1] = 1
	if err := os.WriteFile(b, data, 0o600); err != nil {
		t.Fatal(err)
	}
	base, err := mover.OpenSource(a, false)
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	target, err := mover.OpenSource(b, false)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	got, err := mover.Diff(context.Background(), base, target, mover.DiffOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := (mover.ChangeList{{5 << 20, 512}}); !slices.Equal(got, want) {
		t.Fatalf("Diff = %v, want %v", got, want)
	}
}

// sparseCounter is a device that counts the bytes read through it and
// still answers chunk.Sparse.
type sparseCounter struct {
	*mover.Device
	n atomic.Int64
}

func (c *sparseCounter) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.Device.ReadAt(p, off)
	c.n.Add(int64(n))
	return n, err
}

// TestDiffSkipsSharedHoles: ranges that are holes in both sparse files
// are not read, and the answer is what comparing every byte gives.
func TestDiffSkipsSharedHoles(t *testing.T) {
	dir := t.TempDir()
	const size = 256 << 20
	paths := []string{filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")}
	data := bytes.Repeat([]byte("data"), 1<<18) // 1 MiB
	for i, p := range paths {
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		// Both hold data at 16 MiB; only b at 100 MiB; only a at 200 MiB.
		offs := map[int][]int64{0: {16 << 20, 200 << 20}, 1: {16 << 20, 100 << 20}}[i]
		for _, off := range offs {
			if _, err := f.WriteAt(data, off); err != nil {
				t.Fatal(err)
			}
		}
		f.Close()
	}
	var srcs [2]*sparseCounter
	for i, p := range paths {
		d, err := mover.OpenSource(p, false)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		srcs[i] = &sparseCounter{Device: d}
	}
	got, err := mover.Diff(t.Context(), srcs[0], srcs[1], mover.DiffOptions{ReadSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	want := mover.ChangeList{{100 << 20, 1 << 20}, {200 << 20, 1 << 20}}
	if !slices.Equal(got, want) {
		t.Fatalf("Diff = %v, want %v", got, want)
	}
	// Three 4 MiB read ranges hold data in either file; each is read
	// from both.
	for i, s := range srcs {
		if n := s.n.Load(); n != 3*4<<20 {
			t.Errorf("source %d: read %d bytes, want %d (holes both share read)", i, n, 3*4<<20)
		}
	}
}
