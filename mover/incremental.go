package mover

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"

	"github.com/blockmover/blockmover/chunk"
	"github.com/blockmover/blockmover/repo"
)

// An incremental export starts from a base snapshot's chunk list and a list
// of changed extents, and reads only around the changes. It must yield
// exactly the chunk list a full export of the same bytes yields; these are
// the rules that make it so (G is the zero block, which decides holes):
//
//   - Restart. The pieces up to a cut point r, and r being a cut point, are
//     a function of the bytes before r and of the zero block that holds r
//     or starts at r, all of which lie before alignDown(r)+G. So cutting may
//     restart at a base cut point r only if r < alignDown(start of change)
//     (then that block ends at or before it), or r is the segment start.
//   - Resync. The pieces from a cut point c onwards are a function of the
//     bytes from alignDown(c). So once a new cut lands on a base cut point
//     c ≥ alignUp(end of change), every later base piece up to the next
//     change's restart point is reused without reading. A cut that lands on
//     a base cut point earlier than that is not enough: CBT extents cover
//     unchanged bytes too, and a later change inside the extent would be
//     missed.
//   - A cut never crosses a segment edge, so a change never spreads past
//     its segment.
//   - Known zeros. A base hole that no change touches still reads as
//     zeros, so the re-cut is given a source that says so (chunk.Sparse,
//     knownZeros) and reads none of it: the restart and resync points of
//     a change inside a long hole can lie megabytes away from it, and
//     the device would be read for zeros the base already recorded. The
//     bytes are the same, so the chunk list is too.

// span is a changed byte range [start, end).
type span struct{ start, end int64 }

// basePiece is a base chunk-list entry at its offset.
type basePiece struct {
	off int64
	e   repo.Entry
}

func alignDown(x, g int64) int64 { return x / g * g }
func alignUp(x, g int64) int64   { return (x + g - 1) / g * g }

// canRestart reports whether cutting may restart at base cut point r for a
// change starting at start.
func canRestart(r, start, segStart, g int64) bool {
	return r == segStart || r < alignDown(start, g)
}

// baseUsable reports whether page i of base covers exactly segment i of a
// volume of size bytes, so its entries can be reused.
func baseUsable(base *repo.Snapshot, p chunk.Params, size int64, i int64) bool {
	if base == nil || base.SegmentSize != p.SegmentSize || i >= int64(len(base.Pages)) {
		return false
	}
	bs, be := base.PageRange(int(i))
	s, e := p.SegmentRange(size, i)
	return bs == s && be == e
}

// incrementalSegment builds segment seg's entries from the base page and
// the segment's changes (clipped to it), cutting only around the changes,
// and returns them appended to entries. Every new piece goes through
// w.add exactly as in a full export; reused base entries go through
// w.reused (accounting, sampled verification) and are appended as they
// are.
func (e *exporter) incrementalSegment(ctx context.Context, w *worker, seg int64, changes []span, entries []repo.Entry) ([]repo.Entry, error) {
	segStart, segEnd := e.p.SegmentRange(e.size, seg)
	baseEntries, err := e.st.LoadPage(ctx, &w.opener, e.opts.Base, int(seg))
	if err != nil {
		return nil, fmt.Errorf("base snapshot: %w", err)
	}
	base := make([]basePiece, len(baseEntries))
	off := segStart
	for i, be := range baseEntries {
		base[i] = basePiece{off, be}
		off += be.Length
	}
	g := int64(e.p.ZeroBlock)
	src := knownZeros(e.src, base, changes, segStart)
	bi := 0 // base[bi] starts at pos
	pos := segStart
	reuse := func(upto int) error {
		for ; bi < upto; bi++ {
			if err := w.reused(ctx, base[bi]); err != nil {
				return err
			}
			entries = append(entries, base[bi].e)
		}
		return nil
	}
	for ci := 0; ci < len(changes); ci++ {
		ch := changes[ci]
		if pos >= segEnd {
			break
		}
		if ch.end <= pos {
			continue // already covered by the previous re-cut
		}
		// Restart at the last base cut point that the change cannot move.
		j := bi
		for j+1 < len(base) && canRestart(base[j+1].off, ch.start, segStart, g) {
			j++
		}
		if err := reuse(j); err != nil {
			return nil, err
		}
		pos = base[bi].off
		end := alignUp(ch.end, g)
		resynced := false
		err := w.cutter.Cut(ctx, src, pos, segEnd, func(pc chunk.Piece) error {
			en, err := w.add(ctx, pc)
			if err != nil {
				return err
			}
			entries = append(entries, en)
			cut := pc.End()
			for bi < len(base) && base[bi].off < cut {
				bi++
			}
			if cut >= segEnd || bi == len(base) || base[bi].off != cut || cut < end {
				return nil
			}
			// A base cut point past the change: stop, unless the next
			// change is so close that it could not restart here.
			for ci+1 < len(changes) && !canRestart(cut, changes[ci+1].start, segStart, g) {
				ci++
				end = max(end, alignUp(changes[ci].end, g))
				if cut < end {
					return nil
				}
			}
			resynced = true
			pos = cut
			return chunk.ErrStop
		})
		if err != nil {
			return nil, err
		}
		if !resynced {
			pos, bi = segEnd, len(base)
		}
	}
	if err := reuse(len(base)); err != nil {
		return nil, err
	}
	return entries, nil
}

// zeroSource is a segment's source whose bytes outside data are known to
// be zeros: a chunk.Sparse for the cutter.
type zeroSource struct {
	src   io.ReaderAt
	inner chunk.Sparse // src's own knowledge of its holes, or nil
	data  []span       // sorted, disjoint: where bytes may be non-zero
	end   int64        // the volume's size
}

// knownZeros returns src for a re-cut of the segment starting at segStart
// that reports as zeros every base hole (of base, the segment's pieces)
// that no change (sorted, within the segment) overlaps. Outside the
// segment nothing is known.
func knownZeros(src Source, base []basePiece, changes []span, segStart int64) io.ReaderAt {
	z := &zeroSource{src: src, end: src.Size()}
	z.inner, _ = src.(chunk.Sparse)
	addData := func(s, e int64) {
		if e <= s {
			return
		}
		if n := len(z.data); n > 0 && z.data[n-1].end >= s {
			z.data[n-1].end = max(z.data[n-1].end, e)
			return
		}
		z.data = append(z.data, span{s, e})
	}
	addData(0, segStart)
	pos := segStart // bytes before pos are in data or known to be zero
	ci := 0
	for _, bp := range base {
		s, e := bp.off, bp.off+bp.e.Length
		if !bp.e.Hole {
			addData(pos, e)
			pos = e
			continue
		}
		// The hole's zeros stand except where a change overlaps it.
		for ci < len(changes) && changes[ci].end <= s {
			ci++
		}
		for k := ci; k < len(changes) && changes[k].start < e; k++ {
			addData(max(pos, changes[k].start), min(changes[k].end, e))
		}
		pos = e
	}
	addData(pos, z.end) // past the segment: unknown
	return z
}

func (z *zeroSource) ReadAt(p []byte, off int64) (int, error) { return z.src.ReadAt(p, off) }

// NextData implements chunk.Sparse: the first range at or after off that
// may hold data by both z's knowledge and the source's own.
func (z *zeroSource) NextData(off int64) (start, end int64, err error) {
	for {
		i := sort.Search(len(z.data), func(i int) bool { return z.data[i].end > off })
		if i == len(z.data) {
			return max(off, z.end), max(off, z.end), nil
		}
		s, e := max(z.data[i].start, off), z.data[i].end
		if z.inner == nil {
			return s, e, nil
		}
		s2, e2, err := z.inner.NextData(s)
		if err != nil || s2 == e2 || s2 < e {
			return s2, min(e, e2), err
		}
		off = s2
	}
}

// reused accounts for a base entry taken without reading, and re-reads a
// random sample of them when VerifyUnchanged asks for it.
func (w *worker) reused(ctx context.Context, bp basePiece) error {
	e := w.e
	if bp.e.Hole {
		e.zeroBytes.Add(bp.e.Length)
		return nil
	}
	e.chunks.Add(1)
	e.reusedBytes.Add(bp.e.Length)
	if e.opts.VerifyUnchanged <= 0 || rand.Float64() >= e.opts.VerifyUnchanged {
		return nil
	}
	buf := e.bufs.get()[:bp.e.Length]
	defer e.bufs.put(buf)
	n, err := e.src.ReadAt(buf, bp.off)
	e.readBytes.Add(int64(n))
	if err != nil && n < len(buf) {
		return fmt.Errorf("verifying unchanged chunk at %d: %w", bp.off, err)
	}
	e.verifiedBytes.Add(int64(n))
	if id := w.hasher.Sum(buf); id != bp.e.ID {
		return fmt.Errorf("%w: the chunk at offset %d (%d bytes) differs from base snapshot %s but lies outside every changed extent; no snapshot was written", ErrChangeListWrong, bp.off, bp.e.Length, e.opts.Base.ID.Short())
	}
	return nil
}

// verifyPage takes an unchanged segment from the base, checking a sample of
// its chunks against the source.
func (w *worker) verifyPage(ctx context.Context, seg int64) error {
	entries, err := w.e.st.LoadPage(ctx, &w.opener, w.e.opts.Base, int(seg))
	if err != nil {
		return fmt.Errorf("base snapshot: %w", err)
	}
	off, _ := w.e.p.SegmentRange(w.e.size, seg)
	for _, en := range entries {
		if err := w.reused(ctx, basePiece{off, en}); err != nil {
			return err
		}
		off += en.Length
	}
	return nil
}
