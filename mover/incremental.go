package mover

import (
	"context"
	"fmt"
	"math/rand/v2"

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
		err := w.cutter.Cut(ctx, e.src, pos, segEnd, func(pc chunk.Piece) error {
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
