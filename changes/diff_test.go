package changes_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/blockmover/blockmover/changes"
)

// memSource is a Volume over a byte slice.
type memSource struct{ b []byte }

func (m *memSource) Size() int64 { return int64(len(m.b)) }
func (m *memSource) ReadAt(p []byte, off int64) (int, error) {
	return copy(p, m.b[off:]), nil
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed)) }

func fillRand(r *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(r.Uint32())
	}
}

// naiveDiff is the model for Diff: compare block by block, merge runs.
func naiveDiff(base, target []byte, bs int64) changes.ChangeList {
	var out changes.ChangeList
	add := func(off, n int64) {
		if k := len(out); k > 0 && out[k-1].End() == off {
			out[k-1].Length += n
			return
		}
		out = append(out, changes.Extent{Offset: off, Length: n})
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
		opts   changes.DiffOptions
		change func(b []byte)
	}{
		{"identical", 3<<20 + 123, 0, changes.DiffOptions{}, func([]byte) {}},
		{"first byte", 1 << 20, 0, changes.DiffOptions{BlockSize: 4096, ReadSize: 64 << 10}, func(b []byte) { b[0] ^= 1 }},
		{"last byte, odd size", 1<<20 + 4097, 0, changes.DiffOptions{BlockSize: 4096, ReadSize: 64 << 10}, func(b []byte) { b[len(b)-1] ^= 1 }},
		{"last byte, one short block", 4097, 0, changes.DiffOptions{BlockSize: 4096}, func(b []byte) { b[4096] ^= 0x80 }},
		{"to zeros across reads", 2 << 20, 0, changes.DiffOptions{BlockSize: 4096, ReadSize: 64 << 10}, func(b []byte) { clear(b[60<<10 : 300<<10]) }},
		{"everything", 1 << 20, 0, changes.DiffOptions{BlockSize: 512, ReadSize: 8 << 10, Workers: 3}, func(b []byte) {
			for i := range b {
				b[i] ^= 0xff
			}
		}},
		{"block larger than read", 1 << 20, 0, changes.DiffOptions{BlockSize: 256 << 10, ReadSize: 4096}, func(b []byte) { b[300<<10] ^= 1 }},
		{"read not a multiple of block", 1 << 20, 0, changes.DiffOptions{BlockSize: 3000, ReadSize: 10000}, func(b []byte) {
			b[2999] ^= 1
			b[3000] ^= 1
			b[9999] ^= 1
			b[10000] ^= 1
		}},
		{"more workers than reads", 100 << 10, 0, changes.DiffOptions{Workers: 64}, func(b []byte) { b[70<<10] ^= 1 }},
		{"scattered", 4 << 20, 0, changes.DiffOptions{BlockSize: 4096, ReadSize: 128 << 10}, func(b []byte) {
			for range 200 {
				b[r.IntN(len(b))] ^= 1
			}
		}},
		{"grown target", 1 << 20, 12345, changes.DiffOptions{}, func(b []byte) { b[5] ^= 1 }},
		{"grown target, last base block changed", 1 << 20, 1, changes.DiffOptions{}, func(b []byte) { b[1<<20-1] ^= 1 }},
		{"empty base", 0, 4096, changes.DiffOptions{}, func([]byte) {}},
		{"both empty", 0, 0, changes.DiffOptions{}, func([]byte) {}},
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
			got, err := changes.Diff(context.Background(), &memSource{b: base}, &memSource{b: target}, tc.opts)
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

	if _, err := changes.Diff(ctx, full, small, changes.DiffOptions{}); err == nil {
		t.Error("a target smaller than the base: no error")
	}

	eio := errors.New("input/output error")
	_, err := changes.Diff(ctx, full, &diffFailingSource{memSource: memSource{b: img}, failAt: 700 << 10, err: eio}, changes.DiffOptions{BlockSize: 4096, ReadSize: 64 << 10})
	if !errors.Is(err, eio) {
		t.Errorf("a failing target: %v", err)
	}
	_, err = changes.Diff(ctx, &diffFailingSource{memSource: memSource{b: img}, failAt: 0, err: eio}, full, changes.DiffOptions{})
	if !errors.Is(err, eio) {
		t.Errorf("a failing base: %v", err)
	}

	_, err = changes.Diff(ctx, &diffShortSource{memSource: memSource{b: img[:1000]}, claim: 1 << 20}, full, changes.DiffOptions{})
	if err == nil {
		t.Error("a base shorter than its size: no error")
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := changes.Diff(cctx, full, full, changes.DiffOptions{ReadSize: 4096, BlockSize: 4096}); !errors.Is(err, context.Canceled) {
		t.Errorf("a canceled context: %v", err)
	}
}

func BenchmarkDiff(b *testing.B) {
	const size = 256 << 20
	img := make([]byte, size)
	fillRand(newRand(1), img)
	other := bytes.Clone(img)
	other[size/2] ^= 1
	b.SetBytes(size)
	for b.Loop() {
		if _, err := changes.Diff(context.Background(), &memSource{b: img}, &memSource{b: other}, changes.DiffOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
