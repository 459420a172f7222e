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
//
// One step of the fingerprint is
//
//	d' = (d ^ out[w])<<8 | in[c]) ^ mod[(d ^ out[w])>>56]
//
// for the byte w leaving the window and c entering it. The reduction is
// linear over GF(2) (mod[a^b] = mod[a]^mod[b]), so the step splits into a
// part that depends on d and one that depends only on the bytes:
//
//	d' = d<<8 ^ mod[d>>56] ^ out1[w] ^ in[c]
//
// and two steps into
//
//	d'' = d<<16 ^ modA[d>>56] ^ mod[byte(d>>48)] ^ out2[w0] ^ out1[w1] ^ in[c0]<<8 ^ in[c1]
//
// whose chain through d is one load deep instead of two, which is what
// bounds the loop: the steady state advances two bytes per step and still
// tests every byte's digest for a cut.
type rabin struct {
	out, mod, in [256]uint64 // all shifted up by align
	out1, out2   [256]uint64 // out folded through one and two steps
	modA         [256]uint64 // mod of the top byte carried through a second step
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
	for b := range 256 {
		o := r.out[b]<<8 ^ r.mod[r.out[b]>>56]
		r.out1[b] = o
		r.out2[b] = o<<8 ^ r.mod[o>>56]
		m := r.mod[b]
		r.modA[b] = m<<8 ^ r.mod[m>>56]
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
	// Byte by byte through the window ring until the window holds only
	// bytes of b and the chunk is past its minimum size.
	// (The skip leaves count ≥ min−64, so 64 bytes reach min.)
	slow := min(n+max(windowSize, r.min-s.count), len(b))
	if m, cut := r.scanRing(s, b[n:slow]); cut || slow == len(b) {
		return n + m, cut
	}
	m, cut := r.scanFast(s, b, slow)
	// Leave the ring as if every byte had gone through it.
	copy(s.win[:], b[m-windowSize:m])
	s.wpos = 0
	return m, cut
}

// scanRing is the one-byte step with the window kept in s.win.
func (r *rabin) scanRing(s *rabinState, b []byte) (int, bool) {
	digest, wpos, add := s.digest, s.wpos, s.count
	win := &s.win
	out, mod, in := &r.out, &r.mod, &r.in
	mask, lo, hi := r.mask, r.min, r.max
	for i, c := range b {
		wpos %= windowSize
		digest ^= out[win[wpos]]
		win[wpos] = c
		wpos++
		digest = (digest<<8 | in[c]) ^ mod[digest>>56]
		add++
		if (digest&mask == 0 || add >= hi) && add >= lo {
			s.digest, s.wpos, s.count = digest, wpos, add
			return i + 1, true
		}
	}
	s.digest, s.wpos, s.count = digest, wpos%windowSize, add
	return len(b), false
}

// scanFast hashes b[i:] two bytes per step, reading the byte that leaves
// the window from b itself: b[i−64:i] must be the window's bytes, and the
// chunk must be at least min bytes long already. It returns the end of
// what it consumed and whether the chunk ends there; the ring in s is left
// for the caller to rebuild.
func (r *rabin) scanFast(s *rabinState, b []byte, i int) (int, bool) {
	digest := s.digest
	mask := r.mask
	// p[k] leaves the window as p[k+64] enters it. Pairs run while neither
	// byte can reach the maximum size; the rest goes one byte at a time.
	p := b[i-windowSize:]
	q := p[:windowSize+min(len(p)-windowSize, r.max-s.count-1)]
	k := 0
	for ; k+windowSize+1 < len(q); k += 2 {
		w := q[k : k+2 : k+2]
		c := q[k+windowSize : k+windowSize+2 : k+windowSize+2]
		// Kept as separate values: the compiler then holds digest in a
		// register across the step.
		top, next, d8 := digest>>56, byte(digest>>48), digest<<8
		in0 := r.in[c[0]]
		x1 := r.out1[w[0]] ^ in0
		x2 := r.out2[w[0]] ^ r.out1[w[1]] ^ in0<<8 ^ r.in[c[1]]
		d1 := d8 ^ r.mod[top] ^ x1
		d2 := d8<<8 ^ r.modA[top] ^ r.mod[next] ^ x2
		if d1&mask == 0 {
			s.digest, s.count = d1, s.count+k+1
			return i + k + 1, true
		}
		digest = d2
		if d2&mask == 0 {
			s.digest, s.count = digest, s.count+k+2
			return i + k + 2, true
		}
	}
	add := s.count + k
	for ; k+windowSize < len(p); k++ {
		digest = digest<<8 ^ r.mod[digest>>56] ^ r.out1[p[k]] ^ r.in[p[k+windowSize]]
		add++
		if digest&mask == 0 || add >= r.max {
			s.digest, s.count = digest, add
			return i + k + 1, true
		}
	}
	s.digest, s.count = digest, add
	return i + k, false
}
