package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/bits"
	"math/rand/v2"
	"sort"

	"github.com/blockmover/blockmover/changes"
	"github.com/blockmover/blockmover/mover"
)

// Pattern is how the writes of a change are placed on the volume.
type Pattern string

// Change patterns.
const (
	// Scattered writes land at random aligned offsets, each on its own
	// (a file system's metadata, a VM's random small writes).
	Scattered Pattern = "scattered"
	// Clustered writes form Clusters runs of consecutive writes at random
	// places (a database rewriting some tables and its log).
	Clustered Pattern = "clustered"
	// Sequential writes form one run (a large file copied in, a log).
	Sequential Pattern = "sequential"
)

// ChangeSpec describes what happens to a volume between two snapshots:
// Rate·Size bytes are written (rounded to whole writes, at least one write
// if Rate > 0) in writes of WriteSize bytes at offsets aligned to
// WriteSize, placed by Pattern, with new content of class Content. The
// same ChangeSpec on the same volume always gives the same writes.
type ChangeSpec struct {
	Rate      float64 `json:"rate"`
	Pattern   Pattern `json:"pattern"`
	WriteSize int64   `json:"write_size"`
	// Clusters is the number of runs of a clustered pattern (default 64;
	// fewer when there are fewer writes).
	Clusters int `json:"clusters,omitempty"`
	// Content of the new bytes: Random (default) or Compressible at the
	// volume's ratio.
	Content Class `json:"content"`
	// Seed; 0 derives one from the volume's seed.
	Seed uint64 `json:"seed,omitempty"`
}

func (cs ChangeSpec) writeSize() int64 {
	if cs.WriteSize > 0 {
		return cs.WriteSize
	}
	return 4 << 10
}

func (cs ChangeSpec) clusters() int {
	if cs.Clusters > 0 {
		return cs.Clusters
	}
	return 64
}

// Validate checks the change spec for a volume of size bytes.
func (cs ChangeSpec) Validate(size int64) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: change: %s", ErrInvalidSpec, fmt.Sprintf(format, args...))
	}
	switch {
	case math.IsNaN(cs.Rate) || cs.Rate < 0 || cs.Rate > 1:
		return bad("rate %g is not within 0..1", cs.Rate)
	case cs.WriteSize < 0 || cs.writeSize() > size:
		return bad("write size %d must be positive and at most the volume's %d bytes", cs.WriteSize, size)
	case cs.Clusters < 0:
		return bad("clusters %d must be positive", cs.Clusters)
	case cs.Content != Random && cs.Content != Compressible:
		return bad("content %s must be random or compressible", cs.Content)
	}
	switch cs.Pattern {
	case Scattered, Clustered, Sequential:
	case "":
		if cs.Rate > 0 {
			return bad("a pattern is needed (scattered, clustered or sequential)")
		}
	default:
		return bad("unknown pattern %q (want scattered, clustered or sequential)", cs.Pattern)
	}
	return nil
}

// Changed is a volume after a change: the base volume's bytes with the
// change's writes on top. It implements mover.Source; its methods are safe
// for concurrent use.
type Changed struct {
	base   *Volume
	spec   ChangeSpec
	list   changes.ChangeList
	writes int
	ks     keystream
	k      int
}

// Change applies cs to v.
func (v *Volume) Change(cs ChangeSpec) (*Changed, error) {
	if err := cs.Validate(v.spec.Size); err != nil {
		return nil, err
	}
	seed := cs.Seed
	if seed == 0 {
		seed = v.spec.Seed ^ 0xc4a9_6e5e_ed00_0001
	}
	ws := cs.writeSize()
	slots := v.spec.Size / ws
	n := int64(cs.Rate*float64(v.spec.Size)/float64(ws) + 0.5)
	if cs.Rate > 0 {
		n = max(n, 1)
	}
	n = min(n, slots)
	rng := rand.NewPCG(seed, 0xc4a9e)
	var runs []span // in slots
	switch cs.Pattern {
	case Scattered:
		for _, s := range sample(rng, slots, n) {
			runs = append(runs, span{s, s + 1})
		}
	case Clustered:
		k := min(int64(cs.clusters()), n, slots-n+1)
		if n > 0 {
			k = max(k, 1)
		}
		var at int64
		for i, g := range sample(rng, slots-n+1, k) {
			l := n / k
			if int64(i) < n%k {
				l++
			}
			runs = append(runs, span{g + at, g + at + l})
			at += l
		}
	case Sequential:
		if n > 0 {
			s := int64(rng.Uint64() % uint64(slots-n+1))
			runs = append(runs, span{s, s + n})
		}
	}
	ext := make([]changes.Extent, 0, len(runs))
	for _, r := range runs {
		ext = append(ext, changes.Extent{Offset: r.start * ws, Length: (r.end - r.start) * ws})
	}
	list, err := changes.NewChangeList(ext, v.spec.Size)
	if err != nil {
		return nil, fmt.Errorf("change list: %w", err)
	}
	return &Changed{base: v, spec: cs, list: list, writes: int(n), ks: newKeystream(seed, "change"), k: v.k}, nil
}

// sample returns k distinct values of [0, m), sorted (Floyd's algorithm
// over a bitmap: O(m/8) bytes of memory, O(k + m/64) time).
func sample(rng *rand.PCG, m, k int64) []int64 {
	if k <= 0 || m <= 0 {
		return nil
	}
	set := make([]uint64, (m+63)/64)
	has := func(i int64) bool { return set[i/64]&(1<<(i%64)) != 0 }
	add := func(i int64) { set[i/64] |= 1 << (i % 64) }
	for j := m - k; j < m; j++ {
		t := int64(rng.Uint64() % uint64(j+1))
		if has(t) {
			add(j)
		} else {
			add(t)
		}
	}
	out := make([]int64, 0, k)
	for w, word := range set {
		for word != 0 {
			b := bits.TrailingZeros64(word)
			out = append(out, int64(w)*64+int64(b))
			word &= word - 1
		}
	}
	return out
}

// Base returns the volume before the change.
func (c *Changed) Base() *Volume { return c.base }

// Spec returns the change's spec.
func (c *Changed) Spec() ChangeSpec { return c.spec }

// Changes returns the change list: exactly the bytes written.
func (c *Changed) Changes() changes.ChangeList { return c.list }

// Bytes returns how many bytes were written.
func (c *Changed) Bytes() int64 { return c.list.Bytes() }

// Writes returns how many writes of WriteSize bytes the change made.
func (c *Changed) Writes() int { return c.writes }

// Size returns the volume's size.
func (c *Changed) Size() int64 { return c.base.Size() }

// ReadAt computes the changed volume's bytes at off.
func (c *Changed) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.base.ReadAt(p, off)
	if n == 0 {
		return n, err
	}
	end := off + int64(n)
	i := sort.Search(len(c.list), func(i int) bool { return c.list[i].End() > off })
	for ; i < len(c.list) && c.list[i].Offset < end; i++ {
		s, e := max(c.list[i].Offset, off), min(c.list[i].End(), end)
		c.fill(p[s-off:e-off], s)
	}
	return n, err
}

// fill computes new bytes at volume offset pos.
func (c *Changed) fill(dst []byte, pos int64) {
	if c.spec.Content == Compressible {
		compressible(c.ks, c.k, dst, pos)
		return
	}
	c.ks.fill(dst, pos)
}

// Apply makes the base volume on dst (a file or device that holds it) the
// changed volume, writing only the changed extents.
func (c *Changed) Apply(ctx context.Context, dst io.WriterAt) error {
	return copyRanges(ctx, c, c.spans(), dst)
}

// Revert makes the changed volume on dst the base volume again.
func (c *Changed) Revert(ctx context.Context, dst io.WriterAt) error {
	return copyRanges(ctx, c.base, c.spans(), dst)
}

// CopyTo writes the whole changed volume to dst (see Generate).
func (c *Changed) CopyTo(ctx context.Context, dst io.WriterAt) error {
	return writeImage(ctx, c, c.Size(), c.dataRanges(), dst)
}

func (c *Changed) spans() []span {
	out := make([]span, len(c.list))
	for i, e := range c.list {
		out[i] = span{e.Offset, e.End()}
	}
	return out
}

// dataRanges returns the base's data ranges with the changes added.
func (c *Changed) dataRanges() []span {
	base := c.base.dataRanges()
	all := make([]span, 0, len(base)+len(c.list))
	i, j := 0, 0
	for i < len(base) || j < len(c.list) {
		if j == len(c.list) || i < len(base) && base[i].start <= c.list[j].Offset {
			all = addSpan(all, base[i])
			i++
		} else {
			all = addSpan(all, span{c.list[j].Offset, c.list[j].End()})
			j++
		}
	}
	return all
}

// Sparse returns the changed volume as a source that reports its zero
// ranges like a sparse file (see Volume.Sparse).
func (c *Changed) Sparse() mover.Source { return sparseSource{c, c.dataRanges()} }
