package chunk

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"math/rand/v2"
	"testing"

	"github.com/restic/chunker"
)

// testPol is a fixed irreducible polynomial so results are reproducible.
const testPol = 0x3DA3358B4DC173

// genVolume returns size bytes of block-device-like content from seed:
// runs of random data, zeros, repeats of earlier bytes at shifted offsets,
// and low-entropy text.
func genVolume(seed uint64, size int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, size)
	words := []string{"block ", "volume ", "snapshot ", "chunk ", "the ", "data ", "\n", "kubernetes ", "0x1f ", "mover "}
	for pos := 0; pos < size; {
		n := min(size-pos, 4096+r.IntN(3<<20))
		seg := b[pos : pos+n]
		switch r.IntN(5) {
		case 0: // random
			for i := 0; i+8 <= len(seg); i += 8 {
				binary.LittleEndian.PutUint64(seg[i:], r.Uint64())
			}
		case 1: // zeros (already)
		case 2: // repeat earlier data at a shifted offset
			if pos > 0 {
				src := r.IntN(pos)
				copy(seg, b[src:pos])
			}
		default: // text
			for i := 0; i < len(seg); {
				i += copy(seg[i:], words[r.IntN(len(words))])
			}
		}
		pos += n
	}
	return b
}

func testParams(t testing.TB) Params {
	p := DefaultParams(testPol)
	p.SegmentSize = 8 << 20
	p.MinSize, p.AvgSize, p.MaxSize = 64<<10, 256<<10, 1<<20
	p.ZeroBlock = 16 << 10
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	return p
}

// cutAll cuts every segment of src and returns the pieces in order.
func cutAll(t testing.TB, p Params, src io.ReaderAt, size int64) []Piece {
	t.Helper()
	c, err := NewCutter(p, Options{ReadSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	var out []Piece
	for i := int64(0); i < p.Segments(size); i++ {
		s, e := p.SegmentRange(size, i)
		if err := c.Cut(context.Background(), src, s, e, func(pc Piece) error {
			out = append(out, pc)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func checkPieces(t *testing.T, p Params, vol []byte, pieces []Piece) {
	t.Helper()
	var pos int64
	g := int64(p.ZeroBlock)
	for i, pc := range pieces {
		if pc.Offset != pos || pc.Length <= 0 {
			t.Fatalf("piece %d at %d+%d, want offset %d", i, pc.Offset, pc.Length, pos)
		}
		if pc.Offset/p.SegmentSize != (pc.End()-1)/p.SegmentSize {
			t.Fatalf("piece %d [%d,%d) crosses a segment edge", i, pc.Offset, pc.End())
		}
		b := vol[pc.Offset:pc.End()]
		if pc.Hole {
			if pc.Offset%g != 0 || (pc.End()%g != 0 && pc.End() != int64(len(vol))) {
				t.Fatalf("hole %d [%d,%d) not aligned to the zero block", i, pc.Offset, pc.End())
			}
			if !bytes.Equal(b, make([]byte, len(b))) {
				t.Fatalf("hole %d [%d,%d) holds data", i, pc.Offset, pc.End())
			}
		} else {
			if !bytes.Equal(b, pc.Data) {
				t.Fatalf("piece %d [%d,%d): data differs from the source", i, pc.Offset, pc.End())
			}
			if pc.Length > int64(p.MaxChunk()) {
				t.Fatalf("piece %d longer than max: %d", i, pc.Length)
			}
			// No whole zero block may hide inside a data piece.
			for bs := (pc.Offset + g - 1) / g * g; bs+g <= pc.End(); bs += g {
				if bytes.Equal(vol[bs:bs+g], make([]byte, g)) {
					t.Fatalf("piece %d [%d,%d) contains the zero block at %d", i, pc.Offset, pc.End(), bs)
				}
			}
		}
		pos = pc.End()
	}
	if pos != int64(len(vol)) {
		t.Fatalf("pieces end at %d, volume at %d", pos, len(vol))
	}
}

func TestCutCoversVolume(t *testing.T) {
	cdc := testParams(t)
	fixed := cdc
	fixed.Splitter, fixed.FixedSize = Fixed, 256<<10
	sizes := []int{1, 4095, 16 << 10, 100_000, 8 << 20, 8<<20 + 1, 29<<20 + 12345}
	for _, p := range []Params{cdc, fixed} {
		for i, size := range sizes {
			t.Run(fmt.Sprintf("%s/%d", p.Splitter, size), func(t *testing.T) {
				vol := genVolume(uint64(i), size)
				checkPieces(t, p, vol, cutAll(t, p, bytes.NewReader(vol), int64(size)))
			})
		}
	}
}

func TestCutZeroVolume(t *testing.T) {
	p := testParams(t)
	vol := make([]byte, 20<<20+5)
	pieces := cutAll(t, p, bytes.NewReader(vol), int64(len(vol)))
	checkPieces(t, p, vol, pieces)
	if len(pieces) != 3 {
		t.Fatalf("got %d pieces, want one hole per segment (3)", len(pieces))
	}
}

// TestCutRestart checks the property incremental exports rely on: cutting
// from any cut point yields exactly the pieces a full cut yields from there.
func TestCutRestart(t *testing.T) {
	p := testParams(t)
	vol := genVolume(7, 20<<20)
	full := cutAll(t, p, bytes.NewReader(vol), int64(len(vol)))
	c, err := NewCutter(p, Options{ReadSize: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	for i := range full {
		if i%3 != 0 {
			continue
		}
		start := full[i].Offset
		_, end := p.SegmentRange(int64(len(vol)), start/p.SegmentSize)
		j := i
		err := c.Cut(context.Background(), bytes.NewReader(vol), start, end, func(pc Piece) error {
			w := full[j]
			if pc.Offset != w.Offset || pc.Length != w.Length || pc.Hole != w.Hole {
				return fmt.Errorf("restart at %d: piece %+v, want offset %d length %d hole %v", start, pc.Offset, w.Offset, w.Length, w.Hole)
			}
			j++
			if j-i == 4 {
				return ErrStop
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// sparseReader is a bytes.Reader that knows its zero ranges, like a sparse
// file answering SEEK_DATA, and counts what is read.
type sparseReader struct {
	*bytes.Reader
	data [][2]int64 // sorted data ranges
	read int64
}

func (s *sparseReader) ReadAt(p []byte, off int64) (int, error) {
	s.read += int64(len(p))
	return s.Reader.ReadAt(p, off)
}

func (s *sparseReader) NextData(off int64) (int64, int64, error) {
	for _, r := range s.data {
		if r[1] > off {
			return max(r[0], off), r[1], nil
		}
	}
	return s.Size(), s.Size(), nil
}

func TestCutSparseSource(t *testing.T) {
	p := testParams(t)
	size := 40 << 20
	vol := make([]byte, size)
	// Data ranges at odd offsets; everything else is a hole the source knows.
	ranges := [][2]int64{{5000, 70_000}, {3 << 20, 3<<20 + 1}, {9<<20 - 100, 17 << 20}, {33 << 20, 34 << 20}}
	r := rand.New(rand.NewPCG(1, 2))
	for _, rg := range ranges {
		for i := rg[0]; i < rg[1]; i++ {
			vol[i] = byte(r.IntN(255) + 1)
		}
	}
	plain := cutAll(t, p, bytes.NewReader(vol), int64(size))
	sr := &sparseReader{Reader: bytes.NewReader(vol), data: ranges}
	sparse := cutAll(t, p, sr, int64(size))
	checkPieces(t, p, vol, sparse)
	if len(plain) != len(sparse) {
		t.Fatalf("sparse source: %d pieces, plain: %d", len(sparse), len(plain))
	}
	for i := range plain {
		if plain[i].Offset != sparse[i].Offset || plain[i].Length != sparse[i].Length || plain[i].Hole != sparse[i].Hole {
			t.Fatalf("piece %d differs: %+v vs %+v", i, plain[i].Offset, sparse[i].Offset)
		}
	}
	var dataBytes int64
	for _, rg := range ranges {
		dataBytes += rg[1] - rg[0]
	}
	if limit := dataBytes + int64(len(ranges))*2*int64(p.ZeroBlock); sr.read > limit {
		t.Fatalf("read %d bytes of a sparse source with %d data bytes (limit %d)", sr.read, dataBytes, limit)
	}
}

func TestCutErrors(t *testing.T) {
	p := testParams(t)
	c, err := NewCutter(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	vol := genVolume(3, 1<<20)
	ctx := context.Background()
	nop := func(Piece) error { return nil }
	if err := c.Cut(ctx, bytes.NewReader(vol), 0, p.SegmentSize+1, nop); err == nil {
		t.Fatal("a range across a segment edge was accepted")
	}
	if err := c.Cut(ctx, bytes.NewReader(vol), 10, 10, nop); err == nil {
		t.Fatal("an empty range was accepted")
	}
	// The source is shorter than the range: a clear error, no panic.
	if err := c.Cut(ctx, bytes.NewReader(vol), 0, 2<<20, nop); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short source: %v", err)
	}
	boom := errors.New("boom")
	if err := c.Cut(ctx, bytes.NewReader(vol), 0, 1<<20, func(Piece) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("callback error: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := c.Cut(cctx, bytes.NewReader(vol), 0, 1<<20, nop); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestParamsValidate(t *testing.T) {
	good := DefaultParams(testPol)
	tests := []struct {
		name string
		mod  func(*Params)
		ok   bool
	}{
		{"default", func(*Params) {}, true},
		{"fixed", func(p *Params) { p.Splitter, p.FixedSize = Fixed, 1<<20 }, true},
		{"unknown splitter", func(p *Params) { p.Splitter = "rabin" }, false},
		{"reducible polynomial", func(p *Params) { p.Polynomial = 0x3DA3358B4DC172 }, false},
		{"zero polynomial", func(p *Params) { p.Polynomial = 0 }, false},
		{"avg not power of two", func(p *Params) { p.AvgSize = 1000000 }, false},
		{"min above max", func(p *Params) { p.MinSize = 8 << 20 }, false},
		{"max too large", func(p *Params) { p.MaxSize = 1 << 30 }, false},
		{"zero block odd", func(p *Params) { p.ZeroBlock = 5000 }, false},
		{"segment not multiple", func(p *Params) { p.SegmentSize = 64<<20 + 4096 }, false},
		{"segment zero", func(p *Params) { p.SegmentSize = 0 }, false},
		{"fixed not dividing segment", func(p *Params) { p.Splitter, p.FixedSize = Fixed, 3<<20 }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := good
			tc.mod(&p)
			err := p.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidParams) {
				t.Fatalf("error does not wrap ErrInvalidParams: %v", err)
			}
		})
	}
}

// TestGolden pins the chunk boundaries of a fixed generated input, so a
// change to chunking can never slip in unnoticed. If this fails, cut points
// changed: existing repositories would stop deduplicating against new
// exports. Only update the figures together with a format version bump.
func TestGolden(t *testing.T) {
	p := DefaultParams(testPol)
	vol := genVolume(42, 150<<20)
	pieces := cutAll(t, p, bytes.NewReader(vol), int64(len(vol)))
	h := sha256.New()
	var chunks, holes int
	for _, pc := range pieces {
		var rec [17]byte
		binary.LittleEndian.PutUint64(rec[0:], uint64(pc.Offset))
		binary.LittleEndian.PutUint64(rec[8:], uint64(pc.Length))
		if pc.Hole {
			rec[16] = 1
			holes++
		} else {
			chunks++
		}
		h.Write(rec[:])
	}
	got := fmt.Sprintf("%d chunks, %d holes, %x", chunks, holes, h.Sum(nil)[:12])
	const want = "104 chunks, 24 holes, 5d7bc7c9522ecbf9fae9d46b"
	if got != want {
		t.Fatalf("chunk boundaries changed:\n got %s\nwant %s", got, want)
	}
}

func FuzzCut(f *testing.F) {
	f.Add([]byte("hello"), uint16(3))
	f.Add(make([]byte, 70000), uint16(0))
	f.Fuzz(func(t *testing.T, seed []byte, zeros uint16) {
		p := DefaultParams(testPol)
		p.MinSize, p.AvgSize, p.MaxSize = 4<<10, 8<<10, 32<<10
		p.ZeroBlock = 4 << 10
		p.SegmentSize = 1 << 20
		// Expand the seed into a volume with a zero run in the middle.
		vol := bytes.Repeat(seed, 1+(300_000/(len(seed)+1)))
		z := min(int(zeros)*16, len(vol)/2)
		clear(vol[len(vol)/4 : len(vol)/4+z])
		checkPieces(t, p, vol, cutAll(t, p, bytes.NewReader(vol), int64(len(vol))))
	})
}

func benchCut(b *testing.B, vol []byte) {
	p := DefaultParams(testPol)
	c, err := NewCutter(p, Options{})
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, p.MaxChunk())
	c.alloc = func() []byte { return buf }
	b.SetBytes(int64(len(vol)))
	b.ReportAllocs()
	for b.Loop() {
		for i := int64(0); i < p.Segments(int64(len(vol))); i++ {
			s, e := p.SegmentRange(int64(len(vol)), i)
			if err := c.Cut(context.Background(), bytes.NewReader(vol), s, e, func(Piece) error { return nil }); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkCutRandom(b *testing.B) {
	vol := make([]byte, 128<<20)
	r := rand.New(rand.NewPCG(1, 1))
	for i := 0; i+8 <= len(vol); i += 8 {
		binary.LittleEndian.PutUint64(vol[i:], r.Uint64())
	}
	benchCut(b, vol)
}

func BenchmarkCutZeros(b *testing.B) { benchCut(b, make([]byte, 512<<20)) }

// TestRabinMatchesResticChunker: the cutter's content-defined splitter cuts
// exactly where restic/chunker's Chunker cuts, for several size settings
// and both random and low-entropy data.
func TestRabinMatchesResticChunker(t *testing.T) {
	sizes := [][3]int{{64 << 10, 256 << 10, 1 << 20}, {256 << 10, 1 << 20, 4 << 20}, {512 << 10, 1 << 20, 8 << 20}, {4 << 10, 8 << 10, 16 << 10}}
	for i, sz := range sizes {
		p := DefaultParams(testPol)
		p.MinSize, p.AvgSize, p.MaxSize = sz[0], sz[1], sz[2]
		p.SegmentSize = 256 << 20
		vol := genVolume(uint64(100+i), 40<<20)
		// No zero blocks, so the whole volume is one stretch.
		for j := range vol {
			if vol[j] == 0 {
				vol[j] = byte(j) | 1
			}
		}
		var want []int64
		ch := chunker.NewWithBoundaries(bytes.NewReader(vol), chunker.Pol(testPol), uint(p.MinSize), uint(p.MaxSize))
		ch.SetAverageBits(bits.Len(uint(p.AvgSize)) - 1)
		buf := make([]byte, p.MaxSize)
		for {
			c, err := ch.Next(buf)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, int64(c.Start+c.Length))
		}
		var got []int64
		for _, pc := range cutAll(t, p, bytes.NewReader(vol), int64(len(vol))) {
			got = append(got, pc.End())
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("sizes %v: %d cuts differ from restic/chunker's %d", sz, len(got), len(want))
		}
	}
}

// TestRabinScanAnySlicing feeds the fingerprint loop pieces of every size,
// from 1 byte to several windows, so both the byte-at-a-time ring and the
// two-bytes-per-step path start, stop and hand over at every alignment,
// and compares the cuts with restic/chunker's.
func TestRabinScanAnySlicing(t *testing.T) {
	sizes := [][3]int{{64, 128, 512}, {100, 256, 1024}, {1 << 10, 2 << 10, 4 << 10}, {4 << 10, 8 << 10, 9 << 10}}
	for i, sz := range sizes {
		p := DefaultParams(testPol)
		p.MinSize, p.AvgSize, p.MaxSize = sz[0], sz[1], sz[2]
		vol := genVolume(uint64(200+i), 2<<20)
		if i == 3 {
			// Low entropy: most chunks end at the maximum size.
			for j := range vol {
				vol[j] = byte(j % 7)
			}
		}
		var want []int
		ch := chunker.NewWithBoundaries(bytes.NewReader(vol), chunker.Pol(testPol), uint(p.MinSize), uint(p.MaxSize))
		ch.SetAverageBits(bits.Len(uint(p.AvgSize)) - 1)
		buf := make([]byte, p.MaxSize)
		for {
			c, err := ch.Next(buf)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, int(c.Start+c.Length))
		}
		want = want[:len(want)-1] // the last chunk ends at EOF, not at a cut
		r := newRabin(p)
		rnd := rand.New(rand.NewPCG(uint64(i), 9))
		var st rabinState
		r.reset(&st)
		var got []int
		for pos := 0; pos < len(vol); {
			n := 1 + rnd.IntN(3*windowSize)
			if rnd.IntN(4) == 0 {
				n = 1 + rnd.IntN(4<<10)
			}
			b := vol[pos:min(pos+n, len(vol))]
			for len(b) > 0 {
				m, cut := r.scan(&st, b)
				if m <= 0 || m > len(b) {
					t.Fatalf("scan consumed %d of %d bytes", m, len(b))
				}
				pos += m
				b = b[m:]
				if cut {
					got = append(got, pos)
					r.reset(&st)
				}
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("sizes %v: %d cuts differ from restic/chunker's %d", sz, len(got), len(want))
		}
	}
}

// TestLanes2MatchesGo: the two-lane loop (assembly where there is one)
// stops where the Go loop stops, with the same digests, for masks that
// match often and rarely.
func TestLanes2MatchesGo(t *testing.T) {
	r := newRabin(DefaultParams(testPol))
	rnd := rand.New(rand.NewPCG(3, 4))
	q := make([]byte, 1<<20)
	for i := range q {
		q[i] = byte(rnd.Uint32())
	}
	for n := range 2000 {
		l := 2 * (1 + rnd.IntN(2048))
		k := rnd.IntN(len(q) - 2*l - windowSize)
		d, e := rnd.Uint64()<<r.align, rnd.Uint64()<<r.align
		mask := uint64(1)<<(1+n%24) - 1
		mask <<= r.align
		j1, d1, e1 := lanes2(&r.rabinTables, q, k, l, d, e, mask)
		j2, d2, e2 := lanes2Go(&r.rabinTables, q, k, l, d, e, mask)
		if j1 != j2 || d1 != d2 || e1 != e2 {
			t.Fatalf("k %d l %d mask %#x: lanes2 = %d %#x %#x, lanes2Go = %d %#x %#x", k, l, mask, j1, d1, e1, j2, d2, e2)
		}
	}
}
