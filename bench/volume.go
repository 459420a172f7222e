package bench

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sort"
)

// Class is the kind of content of one region of a synthetic volume.
type Class uint8

// Region classes.
const (
	Random       Class = iota // incompressible, never repeated
	Zero                      // all zeros (a hole)
	File                      // real file data from the corpus
	Duplicate                 // a copy of another data region at an unaligned shift
	Compressible              // synthetic data that zstd compresses by Spec.Ratio
	numClasses
)

// String names the class.
func (c Class) String() string {
	switch c {
	case Random:
		return "random"
	case Zero:
		return "zero"
	case File:
		return "file"
	case Duplicate:
		return "duplicate"
	case Compressible:
		return "compressible"
	}
	return fmt.Sprintf("class(%d)", uint8(c))
}

// MarshalText names the class in JSON.
func (c Class) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText reads a class name.
func (c *Class) UnmarshalText(b []byte) error {
	for i := range numClasses {
		if i.String() == string(b) {
			*c = i
			return nil
		}
	}
	return fmt.Errorf("unknown data class %q", b)
}

// isData reports whether a duplicate may copy a region of class c.
func (c Class) isData() bool { return c == Random || c == File || c == Compressible }

// Align is the granularity of a Spec's class fractions and region edges:
// the default zero block of the chunker, so that every zero region is found
// whole as holes. RegionSize must be a multiple of it.
const Align = 64 << 10

// ErrInvalidSpec is wrapped by every error about a malformed Spec or
// ChangeSpec.
var ErrInvalidSpec = errors.New("invalid volume spec")

// Spec defines a synthetic volume. The same Spec (and, with file data, the
// same corpus) always gives the same bytes.
type Spec struct {
	Size int64  `json:"size"`
	Seed uint64 `json:"seed"`
	// Fractions of the volume; what they leave is random data. Each class
	// gets its fraction of the volume to within Align bytes.
	Zero         float64 `json:"zero"`
	File         float64 `json:"file,omitempty"`
	Duplicate    float64 `json:"duplicate"`
	Compressible float64 `json:"compressible"`
	// Ratio is how much zstd compresses the compressible data (at mover's
	// default level, fastest, in 1 MiB chunks), MinRatio to MaxRatio;
	// 0 means 2.
	Ratio float64 `json:"ratio,omitempty"`
	// RegionSize is the granularity at which classes alternate: a multiple
	// of Align (default 16 MiB). A class's last region may be shorter. A
	// duplicate region loses about three chunks to the cuts at its edges
	// and rotation point before content-defined chunking resyncs, so
	// regions much larger than a chunk make duplicates dedup as such.
	RegionSize int64 `json:"region_size,omitempty"`
}

// Region is a run of a synthetic volume with one class of content.
type Region struct {
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
	Class  Class `json:"class"`
	// Duplicate: the index of the region copied and the rotation: byte o
	// of the region is byte (o+Shift) mod Length of the source.
	Source int   `json:"source,omitempty"`
	Shift  int64 `json:"shift,omitempty"`
	// File: the corpus stream offset of the region's first byte.
	CorpusOffset int64 `json:"corpus_offset,omitempty"`
}

// End returns the offset just past the region.
func (r Region) End() int64 { return r.Offset + r.Length }

func (s Spec) region() int64 {
	if s.RegionSize > 0 {
		return s.RegionSize
	}
	return 16 << 20
}

func (s Spec) ratio() float64 {
	if s.Ratio == 0 {
		return defaultRatio
	}
	return s.Ratio
}

// Validate checks the spec.
func (s Spec) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidSpec, fmt.Sprintf(format, args...))
	}
	switch {
	case s.Size <= 0:
		return bad("size %d must be positive", s.Size)
	case s.Zero < 0 || s.File < 0 || s.Duplicate < 0 || s.Compressible < 0 || s.Zero+s.File+s.Duplicate+s.Compressible > 1+1e-9:
		return bad("fractions zero %g, file %g, duplicate %g, compressible %g must be ≥ 0 and add up to at most 1", s.Zero, s.File, s.Duplicate, s.Compressible)
	case s.Ratio != 0 && (s.Ratio < MinRatio || s.Ratio > MaxRatio):
		return bad("compression ratio %g is not within %g..%g", s.Ratio, MinRatio, MaxRatio)
	case s.RegionSize < 0 || s.RegionSize%Align != 0:
		return bad("region size %d must be a positive multiple of %d", s.RegionSize, Align)
	}
	return nil
}

// shuffle is Fisher–Yates with a PCG generator: spelled out so that the
// layout of a seed never changes with the Go release.
func shuffle[T any](rng *rand.PCG, s []T) {
	for i := len(s) - 1; i > 0; i-- {
		j := int(rng.Uint64() % uint64(i+1))
		s[i], s[j] = s[j], s[i]
	}
}

// Layout returns the volume's regions in order. Each class gets its
// fraction of the volume rounded to Align bytes, in regions of RegionSize
// (one shorter region per class takes the remainder), shuffled by the
// seed; random data fills what is left, and takes the last Size mod Align
// bytes, so every other region starts and ends on an Align boundary.
func (s Spec) Layout() ([]Region, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	aligned := s.Size / Align * Align
	round := func(f float64) int64 { return int64(f*float64(s.Size)/Align+0.5) * Align }
	classes := []Class{Zero, File, Duplicate, Compressible}
	want := []int64{round(s.Zero), round(s.File), round(s.Duplicate), round(s.Compressible)}
	sum := func() (t int64) {
		for _, w := range want {
			t += w
		}
		return t
	}
	for sum() > aligned { // rounding up overshot: trim the largest
		i := 0
		for j := range want {
			if want[j] > want[i] {
				i = j
			}
		}
		want[i] -= Align
	}
	classes = append(classes, Random)
	want = append(want, aligned-sum())
	if want[2] > 0 && want[1]+want[3]+want[4]+(s.Size-aligned) == 0 {
		return nil, fmt.Errorf("%w: duplicates need random, compressible or file data to copy", ErrInvalidSpec)
	}
	r := s.region()
	var regions []Region
	for i, c := range classes {
		for left := want[i]; left > 0; left -= min(left, r) {
			regions = append(regions, Region{Class: c, Length: min(left, r)})
		}
	}
	shuffle(rand.NewPCG(s.Seed, 0x5eed), regions)
	if tail := s.Size - aligned; tail > 0 {
		regions = append(regions, Region{Class: Random, Length: tail})
	}
	var off, corpusOff int64
	var data []int
	for i := range regions {
		regions[i].Offset = off
		off += regions[i].Length
		switch regions[i].Class {
		case File:
			regions[i].CorpusOffset = corpusOff
			corpusOff += regions[i].Length
		}
		if regions[i].Class.isData() {
			data = append(data, i)
		}
	}
	// A duplicate copies a data region at least as long as itself (the
	// longest there is if none is), so that it repeats no bytes of its own.
	// byLength: the data regions, longest first (ties in volume order).
	byLength := slices.Clone(data)
	slices.SortStableFunc(byLength, func(a, b int) int { return cmp.Compare(regions[b].Length, regions[a].Length) })
	rng := rand.NewPCG(s.Seed, 0xd0b1e)
	for i := range regions {
		if regions[i].Class != Duplicate {
			continue
		}
		n := sort.Search(len(byLength), func(j int) bool { return regions[byLength[j]].Length < regions[i].Length })
		src := byLength[rng.Uint64()%uint64(max(n, 1))]
		regions[i].Source = src
		if m := regions[src].Length; m > 2 {
			// Odd, so that the copy is never block-aligned.
			regions[i].Shift = min(m-1, int64(1+rng.Uint64()%uint64(m-2))|1)
		}
	}
	return regions, nil
}

// Volume is a synthetic volume computed on demand: any range of its bytes
// is a pure function of the Spec (and corpus), so it can feed an export
// directly, with no disk in between, or be written to a file or device. It
// implements mover.Source; its methods are safe for concurrent use.
type Volume struct {
	spec    Spec
	regions []Region
	starts  []int64
	corpus  *Corpus
	random  keystream
	comp    keystream
	k       int // random bytes per compressible unit
}

// NewVolume returns the volume of spec. A spec with file data needs a
// corpus.
func NewVolume(spec Spec, corpus *Corpus) (*Volume, error) {
	regions, err := spec.Layout()
	if err != nil {
		return nil, err
	}
	if spec.File > 0 && corpus == nil {
		return nil, fmt.Errorf("%w: a volume with file data needs a corpus", ErrInvalidSpec)
	}
	v := &Volume{spec: spec, regions: regions, corpus: corpus,
		random: newKeystream(spec.Seed, "random"), comp: newKeystream(spec.Seed, "compressible"),
		k: randomPerUnit(spec.ratio())}
	for _, r := range regions {
		v.starts = append(v.starts, r.Offset)
	}
	return v, nil
}

// Spec returns the volume's spec.
func (v *Volume) Spec() Spec { return v.spec }

// Size returns the volume's size in bytes.
func (v *Volume) Size() int64 { return v.spec.Size }

// Regions returns the volume's layout.
func (v *Volume) Regions() []Region { return append([]Region(nil), v.regions...) }

// ClassBytes returns how many bytes of the volume each class holds.
func (v *Volume) ClassBytes() map[Class]int64 {
	m := map[Class]int64{}
	for _, r := range v.regions {
		m[r.Class] += r.Length
	}
	return m
}

// ReadAt computes the volume's bytes at off (the io.ReaderAt contract: a
// read past the end returns what there is and io.EOF).
func (v *Volume) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("volume: negative offset %d", off)
	}
	if off >= v.spec.Size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), v.spec.Size-off))
	i := sort.Search(len(v.starts), func(i int) bool { return v.starts[i] > off }) - 1
	for done := 0; done < n; i++ {
		r := v.regions[i]
		o := off + int64(done) - r.Offset
		k := int(min(int64(n-done), r.Length-o))
		if err := v.fill(p[done:done+k], i, o); err != nil {
			return done, err
		}
		done += k
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// fill computes bytes [o, o+len(dst)) of region i.
func (v *Volume) fill(dst []byte, i int, o int64) error {
	r := v.regions[i]
	switch r.Class {
	case Zero:
		clear(dst)
	case Random:
		v.random.fill(dst, r.Offset+o)
	case Compressible:
		compressible(v.comp, v.k, dst, r.Offset+o)
	case File:
		if _, err := v.corpus.ReadAt(dst, r.CorpusOffset+o); err != nil {
			return err
		}
	case Duplicate:
		src := v.regions[r.Source]
		pos := (o + r.Shift) % src.Length
		for len(dst) > 0 {
			k := int(min(int64(len(dst)), src.Length-pos))
			if err := v.fill(dst[:k], r.Source, pos); err != nil {
				return err
			}
			dst, pos = dst[k:], 0
		}
	}
	return nil
}

// dataRanges returns the merged ranges that are not zero regions.
func (v *Volume) dataRanges() []span {
	var out []span
	for _, r := range v.regions {
		if r.Class != Zero {
			out = addSpan(out, span{r.Offset, r.End()})
		}
	}
	return out
}

// span is a byte range [start, end).
type span struct{ start, end int64 }

// addSpan appends s to sorted spans, merging it with the last one when
// they touch or overlap. s must not start before the last span does.
func addSpan(out []span, s span) []span {
	if n := len(out); n > 0 && s.start <= out[n-1].end {
		out[n-1].end = max(out[n-1].end, s.end)
		return out
	}
	return append(out, s)
}
