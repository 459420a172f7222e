package mover_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/blockmover/blockmover/changes"
	"github.com/blockmover/blockmover/chunk"
	"github.com/blockmover/blockmover/mover"
	"github.com/blockmover/blockmover/repo"
)

// smallParams cut small volumes into many chunks and segments, so that the
// property test exercises every rule quickly.
func smallParams(p *chunk.Params) {
	p.SegmentSize = 4 << 20
	p.ZeroBlock = 16 << 10
	p.MinSize, p.AvgSize, p.MaxSize = 16<<10, 64<<10, 256<<10
}

// memSource is a Source over a byte slice that counts what is read, outside
// the exporter.
type memSource struct {
	b    []byte
	read atomic.Int64
}

func (m *memSource) Size() int64 { return int64(len(m.b)) }
func (m *memSource) ReadAt(p []byte, off int64) (int, error) {
	n := copy(p, m.b[off:])
	m.read.Add(int64(n))
	return n, nil
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed)) }

// memTarget is a Target over a byte slice.
type memTarget struct {
	b []byte
}

func (m *memTarget) Size() int64 { return int64(len(m.b)) }
func (m *memTarget) WriteAt(p []byte, off int64) (int, error) {
	return copy(m.b[off:], p), nil
}
func (m *memTarget) Zero(off, n int64) error { clear(m.b[off : off+n]); return nil }
func (m *memTarget) Sync() error             { return nil }

// change is one modification of a test image and the extent the change
// list reports for it (which may be larger than what changed).
type change struct {
	apply  func(b []byte)
	extent changes.Extent
}

func fillRand(r *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(r.Uint32())
	}
}

// patterns returns the change patterns of the property test for an image
// of size bytes.
func patterns(r *rand.Rand, size int64, seg int64) map[string][]change {
	write := func(off, n int64, zero bool) change {
		return change{apply: func(b []byte) {
			if zero {
				clear(b[off : off+n])
			} else {
				fillRand(r, b[off:off+n])
			}
		}, extent: changes.Extent{Offset: off, Length: n}}
	}
	var scattered, clustered, edges, cross, zeroing, growth []change
	for range 40 {
		scattered = append(scattered, write(r.Int64N(size/4096)*4096, 4096, false))
	}
	for range 4 {
		off := r.Int64N(size - 1<<20)
		for k := range 8 {
			clustered = append(clustered, write(off+int64(k)*70_000, 9000, false))
		}
	}
	edges = append(edges, write(0, 1, false), write(size-1, 1, false), write(size-5000, 5000, false), write(seg-10, 20, false))
	for s := seg; s < size; s += seg {
		cross = append(cross, write(s-3000, 6000, false))
	}
	for range 6 {
		off := r.Int64N(size-600_000) / 16384 * 16384
		zeroing = append(zeroing, write(off, 500_000, true), write(off+r.Int64N(100), 1000, true))
	}
	for range 10 {
		growth = append(growth, write(r.Int64N(size-40_000), 40_000, false))
	}
	// A large extent of which only the last bytes changed: CBT extents
	// cover unchanged bytes, and the tail must not be missed.
	tailOff := r.Int64N(size - 3<<20)
	tail := change{apply: func(b []byte) { fillRand(r, b[tailOff+3<<20-100:tailOff+3<<20]) }, extent: changes.Extent{Offset: tailOff, Length: 3 << 20}}
	return map[string][]change{
		"scattered 4KiB": scattered, "clustered runs": clustered, "device edges": edges,
		"across segment edges": cross, "regions made zero": zeroing, "growth from zeros": growth,
		"change in the tail of a large extent": {tail},
		"whole device":                         {write(0, size, false)},
	}
}

// images returns base images of several kinds.
func images(r *rand.Rand, size int) map[string][]byte {
	random := make([]byte, size)
	fillRand(r, random)
	sparse := make([]byte, size)
	for range 30 {
		off := r.IntN(size - 200_000)
		fillRand(r, sparse[off:off+r.IntN(200_000)])
	}
	periodic := bytes.Repeat([]byte("0123456789abcdef-periodic-data-"), size/31+1)[:size]
	constant := bytes.Repeat([]byte{0xAB}, size)
	mixed := make([]byte, size)
	for off := 0; off < size; off += 1 << 20 {
		n := min(1<<20, size-off)
		switch r.IntN(4) {
		case 0:
			fillRand(r, mixed[off:off+n])
		case 1:
			copy(mixed[off:off+n], periodic)
		case 2:
			binary.LittleEndian.PutUint64(mixed[off:], r.Uint64())
		}
	}
	return map[string][]byte{"random": random, "sparse": sparse, "periodic": periodic, "constant": constant, "mixed": mixed}
}

func pagesEqual(a, b *repo.Snapshot) bool {
	if len(a.Pages) != len(b.Pages) {
		return false
	}
	for i := range a.Pages {
		if a.Pages[i] != b.Pages[i] {
			return false
		}
	}
	return true
}

// TestIncrementalEqualsFull is the invariant of incremental exports: on many
// images and change patterns, an incremental export yields exactly the
// chunk list of a full export of the same bytes (pages are content
// addressed, so equal page IDs mean equal chunk lists), and imports
// byte-identically.
func TestIncrementalEqualsFull(t *testing.T) {
	ctx := context.Background()
	const size = 20<<20 + 4321
	r := rand.New(rand.NewPCG(7, 7))
	rp, _ := testRepo(t, smallParams)
	seg := rp.Config().Chunking.SegmentSize
	for iname, img := range images(r, size) {
		base, err := mover.Export(ctx, &memSource{b: img}, rp, mover.ExportOptions{Volume: iname})
		if err != nil {
			t.Fatal(err)
		}
		for pname, pattern := range patterns(r, size, seg) {
			t.Run(iname+"/"+pname, func(t *testing.T) {
				cur := bytes.Clone(img)
				var ext []changes.Extent
				for _, c := range pattern {
					c.apply(cur)
					ext = append(ext, c.extent)
				}
				list, err := changes.NewChangeList(ext, size)
				if err != nil {
					t.Fatal(err)
				}
				inc, err := mover.Export(ctx, &memSource{b: cur}, rp, mover.ExportOptions{Volume: iname, Base: base.Snapshot, Changes: list, VerifyUnchanged: 0.2})
				if err != nil {
					t.Fatal(err)
				}
				full, err := mover.Export(ctx, &memSource{b: cur}, rp, mover.ExportOptions{Volume: iname + "-full"})
				if err != nil {
					t.Fatal(err)
				}
				if !pagesEqual(inc.Snapshot, full.Snapshot) {
					t.Fatalf("incremental chunk list differs from the full export's")
				}
				if pname == "scattered 4KiB" || pname == "regions made zero" {
					out := filepath.Join(t.TempDir(), "out.img")
					importPath(t, rp, inc.Snapshot, out, mover.ImportOptions{})
					got, _ := os.ReadFile(out)
					if !bytes.Equal(got, cur) {
						t.Fatal("incremental snapshot does not import byte-identically")
					}
				}
			})
		}
	}
}

// TestIncrementalReadsLittle: on high-entropy data, an incremental export
// reads at most 1.5× the base chunks that overlap the changes, counted at
// the source, and reports that figure as ReadBytes.
func TestIncrementalReadsLittle(t *testing.T) {
	ctx := context.Background()
	const size = 256 << 20
	r := rand.New(rand.NewPCG(3, 4))
	img := make([]byte, size)
	fillRand(r, img)
	rp, _ := testRepo(t, nil) // default chunk sizes
	base, err := mover.Export(ctx, &memSource{b: img}, rp, mover.ExportOptions{Volume: "v"})
	if err != nil {
		t.Fatal(err)
	}
	// Base chunk boundaries, to measure the chunks that overlap changes.
	var cuts []int64
	o := rp.NewBlobOpener()
	for i := range base.Snapshot.Pages {
		entries, err := rp.LoadPage(ctx, o, base.Snapshot, i)
		if err != nil {
			t.Fatal(err)
		}
		off, _ := base.Snapshot.PageRange(i)
		for _, e := range entries {
			cuts = append(cuts, off)
			off += e.Length
		}
	}
	cuts = append(cuts, size)
	overlap := func(ext []changes.Extent) int64 {
		var n int64
		for i := 0; i+1 < len(cuts); i++ {
			for _, e := range ext {
				if e.Offset < cuts[i+1] && e.Offset+e.Length > cuts[i] {
					n += cuts[i+1] - cuts[i]
					break
				}
			}
		}
		return n
	}
	for _, tc := range []struct {
		name string
		n    int
		len  int64
	}{{"scattered 4KiB", 200, 4096}, {"clustered 1.3MiB", 20, 1300 << 10}} {
		t.Run(tc.name, func(t *testing.T) {
			cur := bytes.Clone(img)
			var ext []changes.Extent
			for range tc.n {
				off := r.Int64N(size-tc.len) / 4096 * 4096
				fillRand(r, cur[off:off+tc.len])
				ext = append(ext, changes.Extent{Offset: off, Length: tc.len})
			}
			list, err := changes.NewChangeList(ext, size)
			if err != nil {
				t.Fatal(err)
			}
			src := &memSource{b: cur}
			inc, err := mover.Export(ctx, src, rp, mover.ExportOptions{Volume: "v", Base: base.Snapshot, Changes: list})
			if err != nil {
				t.Fatal(err)
			}
			limit := overlap(ext) * 3 / 2
			t.Logf("read %d bytes; base chunks overlapping the changes: %d; stored %d", src.read.Load(), overlap(ext), inc.StoredBytes)
			if got := src.read.Load(); got > limit {
				t.Fatalf("read %d bytes, more than 1.5× the %d bytes of base chunks that overlap the changes", got, overlap(ext))
			}
			if inc.ReadBytes != src.read.Load() {
				t.Fatalf("result says %d bytes read, the source saw %d", inc.ReadBytes, src.read.Load())
			}
		})
	}
}

// TestIncrementalSkipsKnownZeros: a change inside a long run of zeros (a
// base hole) is re-cut without reading the zeros around it, which the
// base recorded and no change touches: the export reads the changed bytes
// and little more, from a source that cannot say where its holes are (a
// block device). Before, it read from the hole's start to the next base
// cut point: 8 MiB for 64 KiB changed in 16 MiB. Now it reads the zero
// blocks (64 KiB) that hold the change, and one read (128 KiB, the read
// size of incremental exports) where the hole ends, to find that end: a
// cut point of the base, where the re-cut resyncs.
func TestIncrementalSkipsKnownZeros(t *testing.T) {
	ctx := context.Background()
	const size = 16 << 20
	r := rand.New(rand.NewPCG(5, 6))
	img := make([]byte, size)
	fillRand(r, img[:1<<20])
	fillRand(r, img[9<<20:9<<20+100_000])
	rp, _ := testRepo(t, nil) // default chunk sizes: 64 KiB zero blocks
	base, err := mover.Export(ctx, &memSource{b: img}, rp, mover.ExportOptions{Volume: "v"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		off, n  int64
		maxRead int64
	}{
		{"64 KiB aligned", 5 << 20, 64 << 10, 64<<10 + 128<<10},
		{"4 KiB unaligned", 3<<20 + 12345, 4096, 64<<10 + 128<<10},
		{"64 KiB at the end", size - 64<<10, 64 << 10, 64 << 10}, // no hole end to find
	} {
		t.Run(tc.name, func(t *testing.T) {
			cur := bytes.Clone(img)
			fillRand(r, cur[tc.off:tc.off+tc.n])
			list, err := changes.NewChangeList([]changes.Extent{{Offset: tc.off, Length: tc.n}}, size)
			if err != nil {
				t.Fatal(err)
			}
			src := &memSource{b: cur}
			inc, err := mover.Export(ctx, src, rp, mover.ExportOptions{Volume: "v", Base: base.Snapshot, Changes: list})
			if err != nil {
				t.Fatal(err)
			}
			full, err := mover.Export(ctx, &memSource{b: cur}, rp, mover.ExportOptions{Volume: "v-full"})
			if err != nil {
				t.Fatal(err)
			}
			if !pagesEqual(inc.Snapshot, full.Snapshot) {
				t.Fatal("incremental chunk list differs from the full export's")
			}
			t.Logf("read %d bytes for %d changed", src.read.Load(), tc.n)
			if got := src.read.Load(); got > tc.maxRead || inc.ReadBytes != got {
				t.Fatalf("read %d bytes (result says %d) for %d changed inside zeros, want at most %d", got, inc.ReadBytes, tc.n, tc.maxRead)
			}
		})
	}
}

// TestVerifyUnchangedCatchesWrongChangeList: a change list that misses a
// change fails the export loudly when a sample is verified.
func TestVerifyUnchangedCatchesWrongChangeList(t *testing.T) {
	ctx := context.Background()
	const size = 8 << 20
	r := rand.New(rand.NewPCG(5, 6))
	img := make([]byte, size)
	fillRand(r, img)
	rp, _ := testRepo(t, smallParams)
	base, err := mover.Export(ctx, &memSource{b: img}, rp, mover.ExportOptions{Volume: "v"})
	if err != nil {
		t.Fatal(err)
	}
	cur := bytes.Clone(img)
	fillRand(r, cur[5<<20:5<<20+4096]) // changed, but not in the list
	list, err := changes.NewChangeList([]changes.Extent{{Offset: 1 << 20, Length: 4096}}, size)
	if err != nil {
		t.Fatal(err)
	}
	_, err = mover.Export(ctx, &memSource{b: cur}, rp, mover.ExportOptions{Volume: "v", Base: base.Snapshot, Changes: list, VerifyUnchanged: 1})
	if err == nil {
		t.Fatal("a wrong change list went unnoticed with VerifyUnchanged 1")
	}
	t.Log(err)
	if snaps, _ := rp.Snapshots(ctx); len(snaps) != 1 {
		t.Fatalf("%d snapshots after a failed export, want 1", len(snaps))
	}
}

// TestIncrementalImport: --assume-base writes only what differs, and
// --verify-target finds what differs by reading the target.
func TestIncrementalImport(t *testing.T) {
	ctx := context.Background()
	const size = 24 << 20
	r := rand.New(rand.NewPCG(8, 9))
	img := make([]byte, size)
	fillRand(r, img[:size/2])
	rp, _ := testRepo(t, smallParams)
	base, err := mover.Export(ctx, &memSource{b: img}, rp, mover.ExportOptions{Volume: "v"})
	if err != nil {
		t.Fatal(err)
	}
	cur := bytes.Clone(img)
	fillRand(r, cur[3<<20:3<<20+8192])
	clear(cur[6<<20 : 7<<20])
	fillRand(r, cur[20<<20:20<<20+1000])
	next, err := mover.Export(ctx, &memSource{b: cur}, rp, mover.ExportOptions{Volume: "v"})
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"assume-base", "verify-target"} {
		t.Run(mode, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "replica.img")
			importPath(t, rp, base.Snapshot, path, mover.ImportOptions{})
			opts := mover.ImportOptions{}
			if mode == "assume-base" {
				opts.AssumeBase = base.Snapshot
			} else {
				opts.VerifyTarget = true
			}
			res := importPath(t, rp, next.Snapshot, path, opts)
			got, _ := os.ReadFile(path)
			if !bytes.Equal(got, cur) {
				t.Fatal("incremental import is not byte-identical")
			}
			t.Logf("%s: written %d, zeroed %d, skipped %d, verified %d", mode, res.WrittenBytes, res.ZeroedBytes, res.SkippedBytes, res.VerifiedBytes)
			if res.WrittenBytes > 2<<20 {
				t.Fatalf("wrote %d bytes for ~10 KiB of changes", res.WrittenBytes)
			}
			if res.ZeroedBytes > 2<<20 {
				t.Fatalf("zeroed %d bytes for a 1 MiB zeroed region", res.ZeroedBytes)
			}
		})
	}
}

// TestAllocatedExport: with an allocation map, a full export reads only
// the allocated extents and still yields the chunk list of a plain export.
func TestAllocatedExport(t *testing.T) {
	ctx := context.Background()
	const size = 32 << 20
	r := rand.New(rand.NewPCG(21, 22))
	img := make([]byte, size)
	var ext []changes.Extent
	for range 12 {
		off := r.Int64N(size - 300_000)
		n := 1 + r.Int64N(300_000)
		fillRand(r, img[off:off+n])
		ext = append(ext, changes.Extent{Offset: off, Length: n})
	}
	list, err := changes.NewChangeList(ext, size)
	if err != nil {
		t.Fatal(err)
	}
	rp, _ := testRepo(t, smallParams)
	plain, err := mover.Export(ctx, &memSource{b: img}, rp, mover.ExportOptions{Volume: "plain"})
	if err != nil {
		t.Fatal(err)
	}
	src := &memSource{b: img}
	alloc, err := mover.Export(ctx, mover.WithAllocated(src, list), rp, mover.ExportOptions{Volume: "alloc"})
	if err != nil {
		t.Fatal(err)
	}
	if !pagesEqual(plain.Snapshot, alloc.Snapshot) {
		t.Fatal("export with an allocation map differs from a plain export")
	}
	var allocated int64
	for _, e := range list {
		allocated += e.Length
	}
	// Reads round out to zero blocks at each extent's edges.
	if limit := allocated + int64(len(list))*2*(16<<10); src.read.Load() > limit {
		t.Fatalf("read %d bytes with %d allocated", src.read.Load(), allocated)
	}
}
