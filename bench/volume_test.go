package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func TestCorpusTakesTurnsAndWraps(t *testing.T) {
	dirs := []string{t.TempDir(), t.TempDir()}
	for i, content := range []string{"a1", "a2", "a3"} {
		os.WriteFile(filepath.Join(dirs[0], string(rune('0'+i))), []byte(content), 0o600)
	}
	os.WriteFile(filepath.Join(dirs[1], "x"), []byte("b1"), 0o600)
	c, err := NewCorpus(dirs...)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 16)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	// Turns between directories; a used-up directory is skipped until all
	// are used up, then everything starts again.
	if want := "a1b1a2a3a1b1a2a3"; string(got) != want {
		t.Fatalf("corpus order %q, want %q", got, want)
	}
	if c.Size() != 8 {
		t.Fatalf("size %d", c.Size())
	}
	// Random access reads the same stream.
	b := make([]byte, 5)
	if _, err := c.ReadAt(b, 11); err != nil || string(b) != "1a2a3" {
		t.Fatalf("ReadAt(11) = %q, %v", b, err)
	}
	if _, err := NewCorpus(t.TempDir()); err == nil {
		t.Fatal("an empty corpus was accepted")
	}
}

// zeroBlocks counts the bytes of a volume in all-zero blocks of Align
// bytes: random and compressible data never hold one, so this measures the
// zero fraction from the bytes themselves.
func zeroBlocks(t *testing.T, v io.ReaderAt, size int64) int64 {
	t.Helper()
	var zeros int64
	buf := make([]byte, Align)
	for off := int64(0); off < size; off += Align {
		n := min(Align, size-off)
		if _, err := v.ReadAt(buf[:n], off); err != nil && !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
		if isZero(buf[:n]) {
			zeros += n
		}
	}
	return zeros
}

func isZero(b []byte) bool { return len(b) == 0 || b[0] == 0 && bytes.Equal(b[1:], b[:len(b)-1]) }

func TestSpecFractions(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec Spec
	}{
		{"mixed 64MiB", Spec{Size: 64 << 20, Seed: 1, Zero: 0.25, Duplicate: 0.25, Compressible: 0.25}},
		{"odd size, small regions", Spec{Size: 10<<20 + 3, Seed: 9, Zero: 0.3, Duplicate: 0.3, RegionSize: 1 << 20}},
		{"mostly zeros", Spec{Size: 96 << 20, Seed: 3, Zero: 0.97, Compressible: 0.03, Ratio: 3}},
		{"large regions, uneven fractions", Spec{Size: 100 << 20, Seed: 4, Zero: 0.123, Duplicate: 0.077, Compressible: 0.456, RegionSize: 16 << 20}},
		{"all random", Spec{Size: 8 << 20, Seed: 5}},
		{"all compressible", Spec{Size: 8 << 20, Seed: 6, Compressible: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := NewVolume(tc.spec, nil)
			if err != nil {
				t.Fatal(err)
			}
			size := float64(tc.spec.Size)
			got := v.ClassBytes()
			var total int64
			for _, n := range got {
				total += n
			}
			if total != tc.spec.Size {
				t.Fatalf("layout covers %d bytes of %d", total, tc.spec.Size)
			}
			s := tc.spec
			want := map[Class]float64{Zero: s.Zero, Duplicate: s.Duplicate, Compressible: s.Compressible, Random: 1 - s.Zero - s.Duplicate - s.Compressible}
			for c, f := range want {
				if d := math.Abs(float64(got[c])/size - f); d > 0.01 {
					t.Errorf("%s: %.4f of the volume, asked %.4f", c, float64(got[c])/size, f)
				}
			}
			// The bytes agree: the zero fraction measured from content.
			if d := math.Abs(float64(zeroBlocks(t, v, s.Size))/size - s.Zero); d > 0.01 {
				t.Errorf("zero blocks make %.4f of the volume, asked %.4f", float64(zeroBlocks(t, v, s.Size))/size, s.Zero)
			}
			// Regions tile the volume; all but the tail are aligned.
			var off int64
			for i, r := range v.Regions() {
				if r.Offset != off {
					t.Fatalf("region %d at %d, want %d", i, r.Offset, off)
				}
				if r.Offset%Align != 0 {
					t.Fatalf("region %d at unaligned offset %d", i, r.Offset)
				}
				off = r.End()
			}
		})
	}
}

func TestSpecRejected(t *testing.T) {
	for _, s := range []Spec{
		{Size: 0},
		{Size: 1 << 20, Zero: 0.6, Compressible: 0.6},
		{Size: 1 << 20, Zero: -0.1},
		{Size: 1 << 20, Compressible: 0.5, Ratio: 9},
		{Size: 1 << 20, RegionSize: 1000},
		{Size: 1 << 20, Zero: 0.5, Duplicate: 0.5},
	} {
		if _, err := NewVolume(s, nil); !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("%+v: err %v, want ErrInvalidSpec", s, err)
		}
	}
	if _, err := NewVolume(Spec{Size: 1 << 20, File: 0.5}, nil); err == nil {
		t.Error("file data without a corpus was accepted")
	}
}

func sum(t *testing.T, r io.ReaderAt, size int64) [32]byte {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(r, 0, size)); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

func TestGenerateDeterministic(t *testing.T) {
	spec := Spec{Size: 10<<20 + 3, Seed: 9, Zero: 0.3, Duplicate: 0.3, Compressible: 0.2, RegionSize: 1 << 20}
	gen := func(spec Spec) [32]byte {
		f, err := os.Create(filepath.Join(t.TempDir(), "v"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := Generate(context.Background(), f, spec, nil); err != nil {
			t.Fatal(err)
		}
		if fi, _ := f.Stat(); fi.Size() != spec.Size {
			t.Fatalf("file of %d bytes, want %d", fi.Size(), spec.Size)
		}
		return sum(t, f, spec.Size)
	}
	a := gen(spec)
	if a != gen(spec) {
		t.Fatal("same spec, different bytes")
	}
	v, _ := NewVolume(spec, nil)
	if a != sum(t, v, spec.Size) {
		t.Fatal("the file differs from the volume computed in memory")
	}
	other := spec
	other.Seed++
	if a == gen(other) {
		t.Fatal("another seed gave the same bytes")
	}
	// Any range computed on its own equals the same range of the whole.
	whole := make([]byte, spec.Size)
	if _, err := v.ReadAt(whole, 0); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		off := rng.Int64N(spec.Size)
		n := rng.Int64N(min(3<<20, spec.Size-off)) + 1
		b := make([]byte, n)
		if _, err := v.ReadAt(b, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, whole[off:off+n]) {
			t.Fatalf("ReadAt(%d, +%d) differs from the whole volume", off, n)
		}
	}
	if n, err := v.ReadAt(make([]byte, 10), spec.Size-4); n != 4 || err != io.EOF {
		t.Fatalf("read past the end: %d, %v", n, err)
	}
}

func TestGenerateOverwritesOldData(t *testing.T) {
	spec := Spec{Size: 8 << 20, Seed: 2, Zero: 0.5, RegionSize: 1 << 20}
	path := filepath.Join(t.TempDir(), "v")
	old, _ := NewVolume(Spec{Size: spec.Size, Seed: 77}, nil)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := old.CopyTo(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	if _, err := Generate(context.Background(), f, spec, nil); err != nil {
		t.Fatal(err)
	}
	v, _ := NewVolume(spec, nil)
	if err := Compare(context.Background(), f, v, spec.Size); err != nil {
		t.Fatal(err)
	}
}

func TestDuplicatesCopyOtherRegions(t *testing.T) {
	v, err := NewVolume(Spec{Size: 32 << 20, Seed: 3, Duplicate: 0.5, Compressible: 0.25, RegionSize: 1 << 20}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rs := v.Regions()
	dups := 0
	for _, r := range rs {
		if r.Class != Duplicate {
			continue
		}
		dups++
		src := rs[r.Source]
		if !src.Class.isData() || r.Shift%2 == 0 {
			t.Fatalf("duplicate at %d copies a %s region with shift %d", r.Offset, src.Class, r.Shift)
		}
		a, b := make([]byte, r.Length), make([]byte, src.Length)
		v.ReadAt(a, r.Offset)
		v.ReadAt(b, src.Offset)
		rot := append(append([]byte(nil), b[r.Shift:]...), b[:r.Shift]...)
		if !bytes.Equal(a, rot[:r.Length]) {
			t.Fatalf("duplicate at %d is not its source rotated by %d", r.Offset, r.Shift)
		}
	}
	if dups != 16 {
		t.Fatalf("%d duplicate regions, want 16", dups)
	}
}

// TestCompressibleRatio: zstd at mover's level, in mover's chunk size,
// compresses the compressible class by the ratio asked, within 3%.
func TestCompressibleRatio(t *testing.T) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderCRC(false), zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	for _, ratio := range []float64{1.2, 1.5, 2, 2.5, 3, 4, 4.5} {
		v, err := NewVolume(Spec{Size: 8 << 20, Seed: 11, Compressible: 1, Ratio: ratio}, nil)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1<<20)
		var out int
		for off := int64(0); off < v.Size(); off += int64(len(buf)) {
			v.ReadAt(buf, off)
			out += len(enc.EncodeAll(buf, nil))
		}
		got := float64(v.Size()) / float64(out)
		if math.Abs(got/ratio-1) > 0.03 {
			t.Errorf("ratio %.2f asked, zstd gives %.3f", ratio, got)
		}
		if ratio < 2 {
			continue
		}
		// Real compressible data has low byte entropy; so does this.
		if e := entropy(buf[:12<<10]); e > 7 {
			t.Errorf("ratio %.2f: byte entropy %.2f", ratio, e)
		}
	}
}

func entropy(b []byte) float64 {
	var hist [256]float64
	for _, c := range b {
		hist[c]++
	}
	var e float64
	for _, n := range hist {
		if n > 0 {
			p := n / float64(len(b))
			e -= p * math.Log2(p)
		}
	}
	return e
}

func TestFileRegionsReadTheCorpus(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 3<<20)
	for i := range data {
		data[i] = byte(i / 1000)
	}
	os.WriteFile(filepath.Join(dir, "f"), data, 0o600)
	c, err := NewCorpus(dir)
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVolume(Spec{Size: 8 << 20, Seed: 1, File: 0.5, RegionSize: 1 << 20}, c)
	if err != nil {
		t.Fatal(err)
	}
	var stream int64
	for _, r := range v.Regions() {
		if r.Class != File {
			continue
		}
		if r.CorpusOffset != stream {
			t.Fatalf("file region at %d starts at corpus offset %d, want %d", r.Offset, r.CorpusOffset, stream)
		}
		b := make([]byte, r.Length)
		v.ReadAt(b, r.Offset)
		for i := range b {
			if want := data[(stream+int64(i))%int64(len(data))]; b[i] != want {
				t.Fatalf("file region at %d, byte %d: %d, want %d", r.Offset, i, b[i], want)
			}
		}
		stream += r.Length
	}
	if stream != 4<<20 {
		t.Fatalf("%d bytes of file data, want %d", stream, 4<<20)
	}
}

// BenchmarkVolume measures how fast each class is computed: the read
// stage of an export of a volume computed on the fly.
func BenchmarkVolume(b *testing.B) {
	for _, tc := range []struct {
		name string
		spec Spec
	}{
		{"random", Spec{Size: 64 << 20, Seed: 1}},
		{"compressible", Spec{Size: 64 << 20, Seed: 1, Compressible: 1}},
		{"zero", Spec{Size: 64 << 20, Seed: 1, Zero: 1}},
		{"duplicate", Spec{Size: 64 << 20, Seed: 1, Duplicate: 0.5}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			v, err := NewVolume(tc.spec, nil)
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 4<<20)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				v.ReadAt(buf, int64(i%16)*int64(len(buf)))
			}
		})
	}
}
