package chunk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// Piece is one entry of a chunk list: a run of the volume's bytes that is
// either a data chunk or a hole (all zeros, never stored).
type Piece struct {
	Offset int64 // volume offset of the first byte
	Length int64 // bytes; a data piece is at most Params.MaxChunk long
	Hole   bool
	// Data holds the bytes of a data piece (len(Data) == Length); nil for a
	// hole. It comes from the cutter's allocator and belongs to the callback
	// that receives it: the cutter never touches it again.
	Data []byte
}

// End returns the offset just past the piece.
func (p Piece) End() int64 { return p.Offset + p.Length }

// Sparse is implemented by sources that can tell where data may be without
// reading it: regular files through SEEK_DATA/SEEK_HOLE, or an allocation
// map from changed-block tracking. Bytes outside the returned ranges must
// read as zeros.
type Sparse interface {
	// NextData returns the first range [start, end) with end > off that
	// may hold data, with start >= off; bytes in [off, start) are zeros.
	// When nothing after off may hold data it returns start == end, both
	// at least off (the volume size, typically).
	NextData(off int64) (start, end int64, err error)
}

// ErrStop may be returned by a Cut callback to end the cut early; Cut then
// returns nil.
var ErrStop = errors.New("stop cutting")

// Stats counts a cutter's work. Durations are wall time spent in each step.
type Stats struct {
	ReadBytes    int64         // bytes read from the source
	SkippedBytes int64         // bytes known to be zero without reading (Sparse)
	HoleBytes    int64         // bytes in hole pieces
	DataBytes    int64         // bytes in data pieces
	Chunks       int64         // data pieces
	Holes        int64         // hole pieces
	ReadTime     time.Duration // in Source.ReadAt
	ZeroTime     time.Duration // checking blocks for zeros
	CutTime      time.Duration // finding cut points and copying chunks out
}

// Add adds o to s.
func (s *Stats) Add(o Stats) {
	s.ReadBytes += o.ReadBytes
	s.SkippedBytes += o.SkippedBytes
	s.HoleBytes += o.HoleBytes
	s.DataBytes += o.DataBytes
	s.Chunks += o.Chunks
	s.Holes += o.Holes
	s.ReadTime += o.ReadTime
	s.ZeroTime += o.ZeroTime
	s.CutTime += o.CutTime
}

// Options tune a Cutter without changing where cuts fall.
type Options struct {
	// ReadSize is the size of one read from the source, rounded up to a
	// multiple of the zero block. Default 4 MiB.
	ReadSize int
	// Alloc returns a buffer with capacity of at least Params.MaxChunk for
	// one data piece. Default: make. The pipeline passes a pool here so that
	// memory stays bounded.
	Alloc func() []byte
}

// Cutter cuts ranges of a volume into pieces. A Cutter is not safe for
// concurrent use; run one per goroutine. It keeps its buffers between calls.
type Cutter struct {
	p     Params
	alloc func() []byte
	zeros []byte // ZeroBlock zero bytes to compare against
	rabin *rabin
	win   window
	stats Stats
	spare []byte // a buffer from alloc that the last stretch did not use
}

// NewCutter returns a cutter for p.
func NewCutter(p Params, opts Options) (*Cutter, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	rs := opts.ReadSize
	if rs <= 0 {
		rs = 4 << 20
	}
	rs = (rs + p.ZeroBlock - 1) / p.ZeroBlock * p.ZeroBlock
	c := &Cutter{
		p:     p,
		alloc: opts.Alloc,
		zeros: make([]byte, p.ZeroBlock),
	}
	if c.alloc == nil {
		n := p.MaxChunk()
		c.alloc = func() []byte { return make([]byte, n) }
	}
	c.win.buf = make([]byte, rs)
	c.win.c = c
	if p.Splitter == CDC {
		c.rabin = newRabin(p)
	}
	return c, nil
}

// buffer returns a chunk buffer, reusing one the last stretch left unused.
func (c *Cutter) buffer() []byte {
	if b := c.spare; b != nil {
		c.spare = nil
		return b
	}
	return c.alloc()
}

// Stats returns the counts accumulated since the last ResetStats.
func (c *Cutter) Stats() Stats { return c.stats }

// ResetStats zeroes the counts.
func (c *Cutter) ResetStats() { c.stats = Stats{} }

// Cut cuts the bytes [off, end) of src and calls fn with each piece in
// order. end must be the end of off's segment or the end of the volume,
// whichever comes first (Params.SegmentRange), and off must be a cut point
// of those bytes: a segment start, or the end of a piece that an earlier
// cut of the same bytes produced. Cutting from such a point yields exactly
// the pieces a cut from the segment start yields beyond it, because the
// splitter keeps no state across a cut.
//
// fn owns each piece's Data. If fn returns ErrStop, Cut returns nil at once;
// any other error from fn or from src is returned (wrapped).
func (c *Cutter) Cut(ctx context.Context, src io.ReaderAt, off, end int64, fn func(Piece) error) error {
	if off < 0 || end <= off {
		return fmt.Errorf("chunk: empty or negative range [%d, %d)", off, end)
	}
	seg := off / c.p.SegmentSize
	if end > (seg+1)*c.p.SegmentSize {
		return fmt.Errorf("chunk: range [%d, %d) crosses the segment edge at %d", off, end, (seg+1)*c.p.SegmentSize)
	}
	c.win.reset(ctx, src, end)
	err := c.cut(off, end, fn)
	c.win.src = nil
	c.win.ctx = nil
	if errors.Is(err, ErrStop) {
		return nil
	}
	return err
}

func (c *Cutter) cut(pos, end int64, fn func(Piece) error) error {
	g := int64(c.p.ZeroBlock)
	for pos < end {
		zero, err := c.win.blockZero(pos)
		if err != nil {
			return err
		}
		if zero {
			start := pos
			for pos < end {
				if z, err := c.win.blockZero(pos); err != nil {
					return err
				} else if !z {
					break
				}
				// A known hole may cover many blocks: jump over them.
				next := (pos/g + 1) * g
				if skip := c.win.knownZeroUntil(pos); skip > next {
					next = skip / g * g
				}
				pos = min(next, end)
			}
			c.stats.HoleBytes += pos - start
			c.stats.Holes++
			if err := fn(Piece{Offset: start, Length: pos - start, Hole: true}); err != nil {
				return err
			}
			continue
		}
		next, err := c.stretch(pos, end, fn)
		if err != nil {
			return err
		}
		pos = next
	}
	return nil
}

// stretch cuts the data stretch that starts at pos and returns its end.
func (c *Cutter) stretch(pos, end int64, fn func(Piece) error) (int64, error) {
	sr := &c.win
	sr.startStretch(pos)
	t0 := time.Now()
	r0, z0 := c.stats.ReadTime, c.stats.ZeroTime
	account := func() {
		now := time.Now()
		c.stats.CutTime += now.Sub(t0) - (c.stats.ReadTime - r0) - (c.stats.ZeroTime - z0)
		t0, r0, z0 = now, c.stats.ReadTime, c.stats.ZeroTime
	}
	emit := func(off int64, data []byte) error {
		c.stats.DataBytes += int64(len(data))
		c.stats.Chunks++
		account()
		err := fn(Piece{Offset: off, Length: int64(len(data)), Data: data})
		// The callback's time is the caller's, not the cutter's.
		t0 = time.Now()
		return err
	}
	if c.p.Splitter == Fixed {
		fs := int64(c.p.FixedSize)
		for {
			at := sr.pos
			want := (at/fs+1)*fs - at
			buf := c.buffer()[:want]
			n, err := io.ReadFull(sr, buf)
			if n == 0 && (err == io.EOF || err == io.ErrUnexpectedEOF) {
				c.spare = buf
				account()
				return sr.pos, nil
			}
			if err != nil && err != io.ErrUnexpectedEOF {
				return 0, err
			}
			if err := emit(at, buf[:n]); err != nil {
				return 0, err
			}
		}
	}
	// Content-defined: hash the window's bytes in place and copy each
	// chunk out once.
	g := int64(c.p.ZeroBlock)
	var st rabinState
	c.rabin.reset(&st)
	buf := c.buffer()[:0]
	start := pos
	for {
		if pos >= sr.end {
			break
		}
		zero, err := sr.blockZero(pos)
		if err != nil {
			return 0, err
		}
		if zero {
			break
		}
		be := min((pos/g+1)*g, sr.end)
		b, err := sr.bytes(pos, be)
		if err != nil {
			return 0, err
		}
		for len(b) > 0 {
			n, cut := c.rabin.scan(&st, b)
			buf = append(buf, b[:n]...)
			b = b[n:]
			pos += int64(n)
			if cut {
				if err := emit(start, buf); err != nil {
					return 0, err
				}
				c.rabin.reset(&st)
				buf = c.buffer()[:0]
				start = pos
			}
		}
	}
	if len(buf) > 0 {
		if err := emit(start, buf); err != nil {
			return 0, err
		}
	} else {
		c.spare = buf
	}
	account()
	return pos, nil
}

// window is the cutter's read buffer over the source, and the io.Reader of
// one stretch that the splitter consumes.
type window struct {
	c   *Cutter
	ctx context.Context
	src io.ReaderAt
	end int64 // the cut's end: nothing at or beyond it is read

	buf  []byte
	off  int64 // volume offset of buf[0]
	n    int   // valid bytes in buf
	zoff int64 // block start whose zero state is cached in z
	z    bool
	zok  bool

	sparse        Sparse
	dataStart     int64 // cached Sparse answer: [dataStart, dataEnd) may hold data,
	dataEnd       int64 // everything in [queried, dataStart) is zero
	queried       int64 // offset the cached answer was asked for
	sparseCached  bool
	pos           int64 // stretch reader position
	stretchClosed bool
}

func (w *window) reset(ctx context.Context, src io.ReaderAt, end int64) {
	w.ctx, w.src, w.end = ctx, src, end
	w.n, w.off, w.zok = 0, 0, false
	w.sparse, _ = src.(Sparse)
	w.sparseCached = false
}

// sparseInfo makes the cached Sparse answer cover off.
func (w *window) sparseInfo(off int64) error {
	if w.sparseCached && off >= w.queried && off < w.dataEnd {
		return nil
	}
	if w.sparseCached && off >= w.queried && w.dataStart == w.dataEnd {
		return nil // nothing but zeros from queried on
	}
	s, e, err := w.sparse.NextData(off)
	if err != nil {
		return fmt.Errorf("chunk: finding data at %d: %w", off, err)
	}
	if s < off {
		s = off
	}
	if e < s {
		e = s
	}
	w.queried, w.dataStart, w.dataEnd, w.sparseCached = off, s, e, true
	return nil
}

// knownZeroUntil returns how far the bytes from off are known to be zero
// without reading, or off when nothing is known.
func (w *window) knownZeroUntil(off int64) int64 {
	if w.sparse == nil || w.sparseInfo(off) != nil {
		return off
	}
	if w.dataStart == w.dataEnd {
		return w.end
	}
	return max(off, w.dataStart)
}

// blockZero reports whether the zero block containing off (clipped to the
// cut's end) is all zeros.
func (w *window) blockZero(off int64) (bool, error) {
	g := int64(w.c.p.ZeroBlock)
	bs := off / g * g
	if w.zok && w.zoff == bs {
		return w.z, nil
	}
	be := min(bs+g, w.end)
	if w.knownZeroUntil(bs) >= be {
		w.c.stats.SkippedBytes += be - bs
		w.zoff, w.z, w.zok = bs, true, true
		return true, nil
	}
	b, err := w.bytes(bs, be)
	if err != nil {
		return false, err
	}
	t := time.Now()
	w.z = bytes.Equal(b, w.c.zeros[:len(b)])
	w.c.stats.ZeroTime += time.Since(t)
	w.zoff, w.zok = bs, true
	return w.z, nil
}

// bytes returns the source's bytes [s, e), which lie within one zero block,
// reading a new window when needed. The slice is valid until the next call.
func (w *window) bytes(s, e int64) ([]byte, error) {
	if s >= w.off && e <= w.off+int64(w.n) {
		return w.buf[s-w.off : e-w.off], nil
	}
	if err := w.ctx.Err(); err != nil {
		return nil, err
	}
	g := int64(w.c.p.ZeroBlock)
	start := s / g * g
	n := min(int64(len(w.buf)), w.end-start)
	if w.sparse != nil {
		// Do not read blocks that are known to be zero beyond the data.
		if err := w.sparseInfo(start); err == nil && w.dataEnd > start && w.dataStart < w.dataEnd {
			n = min(n, (w.dataEnd+g-1)/g*g-start)
		}
	}
	// Read, not mapped: mapping the source saved the kernel's copy (4% of
	// an export's CPU on one host) but cost a page fault per 64 KiB, and
	// on a guest with expensive faults it made the 4 GiB export 14% slower
	// (5.6 s against 4.9 s read; issue 15, session 17). The copy into a reused window costs the same
	// everywhere.
	t := time.Now()
	got, err := w.src.ReadAt(w.buf[:n], start)
	w.c.stats.ReadTime += time.Since(t)
	w.c.stats.ReadBytes += int64(got)
	if int64(got) < e-start {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("chunk: reading %d bytes at %d: %w", n, start, err)
	}
	w.off, w.n = start, got
	return w.buf[s-w.off : e-w.off], nil
}

func (w *window) startStretch(pos int64) {
	w.pos = pos
	w.stretchClosed = false
}

// Read implements io.Reader over the current stretch: it returns the bytes
// from the stretch position up to the next hole block or the cut's end.
func (w *window) Read(p []byte) (int, error) {
	g := int64(w.c.p.ZeroBlock)
	n := 0
	for n < len(p) && !w.stretchClosed {
		if w.pos >= w.end {
			w.stretchClosed = true
			break
		}
		zero, err := w.blockZero(w.pos)
		if err != nil {
			return n, err
		}
		if zero {
			w.stretchClosed = true
			break
		}
		be := min((w.pos/g+1)*g, w.end, w.pos+int64(len(p)-n))
		b, err := w.bytes(w.pos, be)
		if err != nil {
			return n, err
		}
		n += copy(p[n:], b)
		w.pos = be
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}
