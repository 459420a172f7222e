package chunk

import "github.com/restic/chunker"

// The content-defined splitter is restic/chunker's algorithm, run over the
// cutter's own read buffer: a Rabin fingerprint of a 64-byte window, reset
// at every cut, with the first MinSize−64 bytes of a chunk skipped. It cuts
// exactly where chunker.Chunker cuts (TestRabinMatchesResticChunker), but
// hashes the bytes in place, reads nothing ahead of the cut and copies each
// byte once instead of three times.

const windowSize = 64

// rabin holds the tables of one polynomial. It is read-only once built.
//
// The digest is kept left-aligned in 64 bits (shifted up by 64−deg), so the
// loop uses only constant shifts: the table index is the top byte, and the
// bits that restic's mod table cancels fall off the top.
type rabin struct {
	out, mod, in [256]uint64 // all shifted up by align
	align        uint        // 64 − degree of the polynomial
	mask         uint64      // (AvgSize−1) << align
	min, max     int
}

func newRabin(p Params) *rabin {
	pol := chunker.Pol(p.Polynomial)
	k := uint(pol.Deg())
	r := &rabin{align: 64 - k, min: p.MinSize, max: p.MaxSize}
	r.mask = uint64(p.AvgSize-1) << r.align
	for b := range 256 {
		// out[b] = Hash(b ‖ 63 zero bytes): adding it slides b out of the
		// window.
		h := appendByte(0, byte(b), pol)
		for range windowSize - 1 {
			h = appendByte(h, 0, pol)
		}
		r.out[b] = uint64(h) << r.align
		// mod[b] = b·x^k mod pol: the reduction of the byte shifted out.
		r.mod[b] = uint64(chunker.Pol(uint64(b)<<k).Mod(pol)) << r.align
		r.in[b] = uint64(b) << r.align
	}
	return r
}

func appendByte(h chunker.Pol, b byte, pol chunker.Pol) chunker.Pol {
	return (h<<8 | chunker.Pol(b)).Mod(pol)
}

// rabinState is the fingerprint state within one chunk.
type rabinState struct {
	win    [windowSize]byte
	wpos   uint
	digest uint64
	count  int // bytes of the current chunk seen so far
}

// reset starts a new chunk, as restic/chunker does after every cut.
func (r *rabin) reset(s *rabinState) {
	*s = rabinState{}
	s.win[0] = 1
	s.wpos = 1
	s.digest = r.in[1] // restic slides in one 1 byte: updateDigest(0, 1) = 1
}

// scan consumes b for the current chunk. It returns how many bytes it
// consumed and whether the chunk ends after them.
func (r *rabin) scan(s *rabinState, b []byte) (int, bool) {
	n := 0
	// The first min−64 bytes of a chunk are never hashed.
	if skip := r.min - windowSize - s.count; skip > 0 {
		if skip >= len(b) {
			s.count += len(b)
			return len(b), false
		}
		n = skip
		s.count += skip
	}
	digest, wpos, add := s.digest, s.wpos, s.count
	win := &s.win
	out, mod, in := &r.out, &r.mod, &r.in
	mask, lo, hi := r.mask, r.min, r.max
	for i, c := range b[n:] {
		wpos %= windowSize
		digest ^= out[win[wpos]]
		win[wpos] = c
		wpos++
		digest = (digest<<8 | in[c]) ^ mod[digest>>56]
		add++
		if (digest&mask == 0 || add >= hi) && add >= lo {
			s.digest, s.wpos, s.count = digest, wpos, add
			return n + i + 1, true
		}
	}
	s.digest, s.wpos, s.count = digest, wpos%windowSize, add
	return len(b), false
}
